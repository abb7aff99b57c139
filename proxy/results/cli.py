"""``kairos results [EXPERIMENT] [--format table|json|csv] [--since DAY] [--until DAY]``.

Wiring: ``add_arguments(subparser)`` then ``subparser.set_defaults(run=main_results)``.

The store is, in this order: ``--store``, ``store.url`` from the configuration, the socket of
a Kairos running with the embedded Valkey (``<store.data_dir>/valkey.sock``), or, when none
runs, the embedded Valkey started on ``store.data_dir`` for the duration of the command (its
data persist, so results can be read with the proxy stopped). Experiment definitions come
from the rules folder (``--rules``, or ``rules.folder``).

Exit status: 0 printed, 1 the store could not be read, 2 bad arguments, configuration or
definitions.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the heavy imports (numpy, scipy, redis) wait until the command runs
    from datetime import datetime

    from experiments.model import Experiment
    from proxy.config import Config
    from proxy.results.summary import ExperimentReport

READ_TIMEOUT = 5.0  # a results read is one pipeline per experiment; generous for big ones


def _day(value: str) -> str:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not valid: expected a UTC day like "
                                         "'2026-11-22'")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", nargs="?", help="one experiment id (default: all)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table",
                        help="table (default), json (schema kairos.results/1) or csv "
                             "(daily counts per arm and goal)")
    parser.add_argument("--since", type=_day, help="first UTC day, YYYY-MM-DD")
    parser.add_argument("--until", type=_day, help="last UTC day, YYYY-MM-DD")
    parser.add_argument("--store", help="redis:// or unix:// URL (default: store.url, or "
                                        "the embedded Valkey's data folder)")
    parser.add_argument("--config", help="TOML config file (default: ./config.toml if present)")
    parser.add_argument("--rules", help="rules folder with [[experiment]] tables "
                                        "(default: rules.folder)")


def main_results(args: argparse.Namespace) -> int:
    """Run ``kairos results``; print to stdout, problems to stderr; return the exit status."""
    import asyncio
    from datetime import UTC, datetime

    from proxy import config as config_module
    from proxy.config import ConfigError
    from proxy.results import export, text
    from proxy.results.definitions import load_definitions
    from proxy.results.service import UnknownExperiment
    from proxy.store.client import StoreUnavailable
    from proxy.store.embedded import EmbeddedStoreError

    try:
        config = config_module.load(args.config)
        definitions = load_definitions(
            args.rules or config.rules.folder,
            lambda problem: print(f"kairos results: rules folder: {problem}", file=sys.stderr))
        with _store_url(args.store, config) as url:
            now = datetime.now(UTC)
            reports = asyncio.run(_read(url, definitions, now, args,
                                        cluster=config.store.cluster))
    except (ConfigError, UnknownExperiment, EmbeddedStoreError, ValueError) as exc:
        print(f"kairos results: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        print(f"kairos results: cannot read the store: {exc}", file=sys.stderr)
        return 1
    if args.format == "json":
        sys.stdout.write(export.to_json(reports, now, since=args.since, until=args.until))
    elif args.format == "csv":
        sys.stdout.write(export.daily_csv(reports))
    else:
        sys.stdout.write(text.render(reports))
    return 0


run = main_results


async def _read(url: str, definitions: Mapping[str, Experiment], now: datetime,
                args: argparse.Namespace, cluster: bool = False) -> list[ExperimentReport]:
    from proxy.results.service import read_reports
    from proxy.store.client import connect, redact
    from proxy.store.experiment_counts import CountsReader
    from proxy.store.keys import Keyspace

    # store.cluster: one node's URL is enough to find the others (as for the proxy)
    client = connect(url, timeout=READ_TIMEOUT, cluster=cluster)
    try:
        reader = CountsReader(client, Keyspace(), redact(url))
        return await read_reports(reader, definitions, now, only=args.experiment,
                                  since=args.since, until=args.until)
    finally:
        await client.aclose()


@contextlib.contextmanager
def _store_url(flag: str | None, config: Config) -> Iterator[str]:
    """The URL to read from; starts (and stops) the embedded Valkey if nothing else runs."""
    from proxy.store.embedded import EmbeddedValkey

    if flag or config.store.url:
        yield flag or config.store.url
        return
    data_dir = Path(config.store.data_dir)
    socket_path = data_dir / "valkey.sock"
    if socket_path.is_socket() and _answers(f"unix://{socket_path.resolve()}"):
        yield f"unix://{socket_path.resolve()}"
        return
    if not data_dir.is_dir():
        raise ValueError(f"no store to read: store.url is empty and the embedded store's "
                         f"folder {data_dir} does not exist; pass --store URL, or run in "
                         "the folder where kairos serve ran")
    with EmbeddedValkey(data_dir) as server:
        yield server.url


def _answers(url: str) -> bool:
    import redis

    try:
        with redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0) as r:
            return bool(r.ping())
    except (redis.RedisError, OSError):
        return False
