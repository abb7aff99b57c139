"""The ``kairos`` command: ``serve`` the proxy, or run the bundled ``demo``.

Besides: ``explain`` a request, ``rules check`` a folder, ``results`` of the experiments, and
``preview`` (a signed link that shows one arm of an experiment).

The parent process resolves the configuration once (file, environment, flags), starts the
embedded Valkey when no store URL is configured, and hands the resolved configuration to the
uvicorn workers through one environment variable, so every worker sees the same values.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import urlsplit

from . import config as config_module
from .config import Config, ConfigError

log = logging.getLogger("kairos")

DEMO_DAYS = 14  # days of simulated history `kairos demo` writes for a new experiment
# Enough simulated visitors that the bundled A/B test ends in a decision ("ship"); writing
# them takes about 3 s at start-up.
DEMO_VISITORS_PER_DAY = 2000
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
    demo.add_argument("--no-seed", dest="seed", action="store_false",
                      help="do not fill new experiments with simulated history")
    demo.set_defaults(run=_demo)

    preview = commands.add_parser(
        "preview", help="print a signed, expiring link that shows one arm of an experiment",
        description="Print a link that shows ARM of EXPERIMENT to whoever opens it, until it "
        "expires; views through it are never counted. Signed with cookies.secrets, else with "
        "the key file beside store.data_dir: run it with the proxy's configuration, in the "
        "folder the proxy runs in.")
    preview.add_argument("experiment", help="experiment id (rules folder)")
    preview.add_argument("arm", help="arm id")
    preview.add_argument("--path", help="page to open (default: the experiment's first page "
                         "when it is a plain path, else /)")
    preview.add_argument("--hours", type=float, default=24.0,
                         help="how long the link works (default 24)")
    preview.add_argument("--base-url", help="where visitors reach Kairos (default: "
                         "http://<server.host>:<server.port>, e.g. http://127.0.0.1:8080)")
    preview.add_argument("--config", help="TOML config file (default: ./config.toml if present)")
    preview.add_argument("--rules", help="rules folder (default: rules.folder)")
    preview.set_defaults(run=_preview)
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
        http="proxy.http_server:ServedProtocol",   # httptools, with bounds on the head
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
        if not config.admin.token:   # the demo's results page needs one: made up per run
            config = config_module.replace(config, "admin.token", secrets.token_urlsafe(12))
        with embedded_store(config) as config:
            if args.seed:
                print(f"  Kairos demo: {_seed_line(config)}", flush=True)
            site = f"http://{args.host}:{args.port}"
            prefix = config.admin.prefix
            print(f"\n  Kairos demo: open {site}/ (origin on :{origin_port})\n"
                  f"  why you see what you see: {site}{prefix}why\n"
                  f"  experiment results:       {site}{prefix}results?token="
                  f"{config.admin.token}\n", flush=True)
            run_uvicorn(config)
    finally:
        origin.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            origin.wait(timeout=5)
    return 0


def seed_demo(config: Config, today: date | None = None) -> tuple[list[str], list[str]]:
    """Simulated history for the experiments of the rules folder that have none yet, in the
    store at ``store.url``; returns the ids of every experiment and of those seeded."""
    from .results.demo import seed_url
    from .rules import RuleLibrary

    definitions = RuleLibrary.load(config.rules.folder, quiet=True).ruleset.experiments
    experiments = [d.experiment for d in definitions]
    if not experiments:
        return [], []
    seeded = seed_url(str(config.store.url), experiments, days=DEMO_DAYS,
                      visitors_per_day=DEMO_VISITORS_PER_DAY,
                      today=today or datetime.now(UTC).date())
    return [e.id for e in experiments], seeded


def _seed_line(config: Config) -> str:
    """``seed_demo`` for ``kairos demo``: one line for the terminal; never stops the demo."""
    try:
        experiments, seeded = seed_demo(config)
    except Exception as exc:  # the demo also works without history: say why and go on
        log.warning("demo history not written", exc_info=True)
        return f"could not write the simulated history ({exc}); results start empty"
    if not experiments:
        return f"no experiments in {config.rules.folder}: no history to simulate"
    if not seeded:
        return f"history already in the store for {', '.join(experiments)}: nothing seeded"
    return (f"seeded {DEMO_DAYS} days of simulated history for {', '.join(seeded)} "
            "(`kairos results` shows them)")


def _preview(args: argparse.Namespace) -> int:
    from .experimentation import PREVIEW_PARAM, Experimentation
    from .rules import RuleLibrary
    from .visitor import cookie_secrets

    config = config_module.load(args.config)
    folder = Path(args.rules or config.rules.folder)
    if not folder.is_dir():
        print(f"kairos preview: no rules folder at {folder}; give --rules FOLDER",
              file=sys.stderr)
        return 2
    if not args.hours > 0:
        print(f"kairos preview: --hours must be more than 0, got {args.hours:g}",
              file=sys.stderr)
        return 2
    library = RuleLibrary.load(folder, quiet=True)
    experiments = Experimentation(lambda: library.ruleset, cookie_secrets(config))
    expires = int(time.time() + args.hours * 3600)
    try:
        token = experiments.preview_token(args.experiment, args.arm, expires)
    except ValueError as exc:
        problems = (f" ({len(library.errors)} errors in {folder}: `kairos rules check` shows "
                    "them)" if library.errors else "")
        print(f"kairos preview: {exc}{problems}", file=sys.stderr)
        return 2
    definition = library.ruleset.experiment(args.experiment)
    assert definition is not None  # preview_token found it
    base = (args.base_url or _listen_url(config)).rstrip("/")
    path = args.path or next((g for g in definition.pages.globs
                              if g.startswith("/") and not any(c in g for c in "*?[")), "/")
    if not path.startswith("/"):
        path = "/" + path
    host = urlsplit(base).netloc or "localhost"
    if definition not in library.ruleset.experiments_on(host, path.split("?", 1)[0]):
        print(f"kairos preview: note: experiment {args.experiment!r} does not run on {path} "
              "(see its pages); the link shows the page without it", file=sys.stderr)
    separator = "&" if "?" in path else "?"
    print(f"{base}{path}{separator}{PREVIEW_PARAM}={token}")
    until = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"kairos preview: shows arm {args.arm!r} of {args.experiment!r} until {until}; "
          "preview views are never counted", file=sys.stderr)
    return 0


def _listen_url(config: Config) -> str:
    host = config.server.host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.server.port}"


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
