"""The ``kairos`` command: ``serve`` the proxy, or run the bundled ``demo``.

The parent process resolves the configuration once (file, environment, flags), starts the
embedded Valkey when no store URL is configured, and hands the resolved configuration to the
uvicorn workers through one environment variable, so every worker sees the same values.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import config as config_module
from .config import Config, ConfigError

log = logging.getLogger("kairos")

BUNDLED_RULES = Path(__file__).resolve().parent.parent / "rules"  # the demo's example rules
SERVE_FLAGS = {  # flag -> config key
    "upstream": "upstream.url", "host": "server.host", "port": "server.port",
    "workers": "server.workers", "rules": "rules.folder", "store": "store.url",
    "log_level": "server.log_level",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is too much
    try:
        return int(args.run(args) or 0)
    except ConfigError as exc:
        print(f"kairos: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:   # `kairos rules check | head`: the reader left, not an error
        sys.stderr.close()
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kairos", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy in front of an upstream site")
    _add_serve_flags(serve)
    serve.set_defaults(run=_serve)

    explain = commands.add_parser("explain", help="show what Kairos derives for a request")
    from . import explain as explain_module
    explain_module.add_arguments(explain)
    explain.set_defaults(run=_explain)

    rules = commands.add_parser("rules", help="work with the rules folder")
    rules_commands = rules.add_subparsers(required=True, metavar="ACTION")
    check = rules_commands.add_parser(
        "check", help="validate a rules folder; exits 1 on any error (for a rules repo's CI)")
    check.add_argument("folder", nargs="?", help="rules folder (default: rules.folder)")
    check.add_argument("--config", help="TOML config file (default: ./config.toml if present)")
    check.set_defaults(run=_rules_check)

    results = commands.add_parser("results", help="experiment results: table, JSON or CSV")
    from .results import cli as results_cli
    results_cli.add_arguments(results)
    results.set_defaults(run=results_cli.main_results)

    demo = commands.add_parser("demo", help="run the demo shop behind Kairos, all embedded")
    demo.add_argument("--config", help="TOML config file (default: ./config.toml if present)")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080, help="proxy port (default 8080)")
    demo.add_argument("--origin-port", type=int, default=0,
                      help="demo origin port (default: a free port)")
    demo.set_defaults(run=_demo)
    return parser


def _add_serve_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config file (default: ./config.toml if present)")
    parser.add_argument("--upstream", help="origin URL, e.g. http://127.0.0.1:8081")
    parser.add_argument("--host", help="listen address")
    parser.add_argument("--port", help="listen port")
    parser.add_argument("--workers", help="worker processes")
    parser.add_argument("--rules", help="rules folder")
    parser.add_argument("--store", help="redis:// URL; empty or absent: embedded Valkey")
    parser.add_argument("--log-level", dest="log_level", help="critical .. debug")


def resolve(args: argparse.Namespace) -> Config:
    overrides = {key: getattr(args, flag, None) for flag, key in SERVE_FLAGS.items()}
    return config_module.load(args.config, overrides=overrides)


def _serve(args: argparse.Namespace) -> int:
    config = resolve(args)
    with embedded_store(config) as config:
        run_uvicorn(config)
    return 0


@contextlib.contextmanager
def embedded_store(config: Config) -> Iterator[Config]:
    """Start the embedded Valkey when no store URL is configured; yield the final config."""
    if config.store.url:
        yield config
        return
    from .store.embedded import EmbeddedValkey

    server = EmbeddedValkey(Path(config.store.data_dir))
    server.start()
    log.info("embedded Valkey started at %s (data in %s)", server.url, config.store.data_dir)
    try:
        yield config_module.replace(config, "store.url", server.url)
    finally:
        server.stop()


def run_uvicorn(config: Config) -> None:
    import uvicorn

    os.environ[config_module.RESOLVED_ENV] = config_module.to_json(config)
    # uvicorn re-raises SIGTERM after its graceful shutdown; with the default handler that
    # kills this process before `embedded_store` can stop Valkey. Exit normally instead.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    log.info("Kairos listening on http://%s:%d, upstream %s, %d worker(s)",
             config.server.host, config.server.port, config.upstream.url, config.server.workers)
    uvicorn.run(
        "proxy.app:app_from_environment",
        factory=True,
        host=config.server.host,
        port=config.server.port,
        workers=config.server.workers,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        lifespan="on",
        # Kairos decides itself which forwarding headers to believe (P5); uvicorn's own
        # handling would rewrite the client address from X-Forwarded-For.
        proxy_headers=False,
        server_header=False,   # the origin's Server header is the one sent (P10)
        date_header=False,     # the origin's Date header is the one sent (P10)
        access_log=False,
        log_level=config.server.log_level,
        timeout_graceful_shutdown=10,
    )


def _rules_check(args: argparse.Namespace) -> int:
    from .rules import check_folder

    folder = args.folder or config_module.load(args.config).rules.folder
    report = check_folder(folder)
    print(report.text)
    return 0 if report.ok else 1


def _explain(args: argparse.Namespace) -> int:
    from . import explain

    config = config_module.load(args.config)
    try:
        print(explain.run(args, config))
    except ValueError as exc:
        print(f"kairos explain: {exc}", file=sys.stderr)
        return 2
    return 0


def _demo(args: argparse.Namespace) -> int:
    origin_port = args.origin_port or free_port()
    origin = subprocess.Popen(
        [sys.executable, "-m", "proxy.demo.site", "--host", "127.0.0.1",
         "--port", str(origin_port)],
    )
    try:
        wait_for_port("127.0.0.1", origin_port, timeout=15)
        overrides = {"upstream.url": f"http://127.0.0.1:{origin_port}",
                     "server.host": args.host, "server.port": args.port}
        config = config_module.load(args.config, overrides=overrides)
        if not Path(config.rules.folder).is_dir():   # started outside the repository
            config = config_module.replace(config, "rules.folder", str(BUNDLED_RULES))
        with embedded_store(config) as config:
            print(f"\n  Kairos demo: open http://{args.host}:{args.port}/ "
                  f"(origin on :{origin_port}, health at {config.admin.prefix}health)\n",
                  flush=True)
            run_uvicorn(config)
    finally:
        origin.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            origin.wait(timeout=5)
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout} s")


if __name__ == "__main__":
    raise SystemExit(main())
