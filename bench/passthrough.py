"""How much does Kairos cost on the pass-through path, compared with nginx?

Most requests through Kairos match no experiment and are simply streamed from
the origin, so pass-through speed bounds the whole product. This script
measures, in one run and against one nginx origin serving static files:

  direct   wrk -> origin
  nginx    wrk -> nginx reverse proxy (keep-alive upstream) -> origin
  kairos   wrk -> `kairos serve --upstream origin` (per --workers value) -> origin

at each payload size and wrk concurrency, and reports requests/s, p50/p99
latency, Kairos/nginx throughput and the median latency Kairos adds over going
direct, against the project's aims (AIMS below).

The three legs take turns within each cell (size x concurrency), so a ratio is
always between runs a few seconds apart: on a shared 2-core machine other work
comes and goes, and it would otherwise land on one leg only. With --rounds N
each cell is repeated N times and each leg's best round counts.

Machine sharing: wrk (one thread), both nginx roles (worker_processes 1 each)
and Kairos (--workers N) share the machine's cores, unpinned: pinning three
servers and a load generator onto 2 cores would favour whichever got a core to
itself. Numbers compare legs within one run, not machines.

Kairos runs in the temp directory, so it uses its defaults (no config.toml, no
rules: pure pass-through) and its embedded Valkey data lands there too.

Usage: .venv/bin/python bench/passthrough.py [--duration 5] [--workers 1,2]
           [--sizes 10k,100k,1m] [--connections 1,10,50] [--rounds 1]
           [--store URL] [--kairos "CMD" | --kairos LABEL="CMD" ...] [--no-kairos]

--kairos may be repeated as LABEL="CMD" to compare variants in one run: they run side by
side and take turns with the baselines within each cell, e.g.
  --kairos aiohttp=".venv/bin/kairos serve"
  --kairos h1="env KAIROS_UPSTREAM_CLIENT=h1 .venv/bin/kairos serve"
Output: markdown on stdout and in bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h

# size -> (min Kairos/nginx throughput, max p50 ms added over direct, or None)
AIMS = {10 * 1024: (0.25, 0.5), 100 * 1024: (0.60, None), 1024 * 1024: (0.85, None)}


@contextlib.contextmanager
def kairos(cmd: list[str], origin: int, workers: int, store: str, workdir: Path,
           label: str = "") -> Iterator[int]:
    """Run Kairos in front of the origin until the with-block ends; yield its port."""
    port = h.free_port()
    argv = [*cmd, "--upstream", f"http://127.0.0.1:{origin}", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers)]
    if store:
        argv += ["--store", store]
    cwd = workdir / f"kairos{'-' + label if label else ''}-w{workers}"
    cwd.mkdir()
    log = cwd / "kairos.log"
    with h.process(argv, log=log, cwd=cwd) as proc:
        try:
            # generous: without --store, Kairos starts an embedded Valkey first
            h.wait_http(f"http://127.0.0.1:{port}/_kairos/health", timeout=60, proc=proc)
        except (TimeoutError, RuntimeError) as exc:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{shlex.join(argv)}\n{exc}\n--- log tail ---\n{tail}") from None
        yield port


def check_body(port: int, path: str, want: bytes) -> None:
    """Refuse to benchmark a leg that does not return the origin's bytes."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        got = resp.read()
    if got != want:
        raise RuntimeError(f"port {port}{path}: body differs ({len(got)} vs {len(want)} bytes)")


def measure(legs: dict[str, int], paths: dict[int, str], root: Path, args) -> list[tuple]:
    """wrk over every size x concurrency, legs taking turns; rows (legs, leg, size, conc, r)."""
    group = " + ".join(leg for leg in legs if leg.startswith("kairos")) or "baselines only"
    best: dict[tuple[str, int, int], h.WrkResult] = {}
    for size in args.sizes:
        for port in legs.values():
            check_body(port, paths[size], (root / paths[size].lstrip("/")).read_bytes())
        for conc in args.connections:
            for _ in range(args.rounds):
                for leg, port in legs.items():
                    url = f"http://127.0.0.1:{port}{paths[size]}"
                    h.run_wrk(url, connections=conc, duration=1)  # warm-up: pools, caches
                    r = h.run_wrk(url, connections=conc, duration=args.duration)
                    print(f"  {leg:10} {h.size_label(size):>4} c={conc:<3} {r.rps:9.0f} req/s  "
                          f"p50 {r.p50_ms:7.3f} ms  p99 {r.p99_ms:7.3f} ms  err {r.errors}",
                          file=sys.stderr)
                    key = leg, size, conc
                    if key not in best or r.rps > best[key].rps:
                        best[key] = r
    return [(group, leg, size, conc, r) for (leg, size, conc), r in best.items()]


def report(rows: list[tuple], args, header: str) -> str:
    by = {(group, leg, size, conc): r for group, leg, size, conc, r in rows}
    out = [header, "", "### Raw numbers", ""]
    out.append(h.markdown_table(
        ["size", "conc", "run with", "leg", "req/s", "p50 ms", "p99 ms", "errors"],
        [[h.size_label(s), c, g, leg, f"{r.rps:,.0f}", f"{r.p50_ms:.3f}", f"{r.p99_ms:.3f}",
          r.errors] for g, leg, s, c, r in sorted(rows, key=lambda t: (t[2], t[3], t[0]))]))
    table = []
    for group, leg, size, conc, k in rows:
        if not leg.startswith("kairos"):
            continue
        n, d = by[group, "nginx", size, conc], by[group, "direct", size, conc]
        ratio, added = k.rps / n.rps, k.p50_ms - d.p50_ms
        min_ratio, max_added = AIMS.get(size, (None, None))
        table.append([
            leg, h.size_label(size), conc, f"{ratio:.0%}",
            h.verdict(ratio >= min_ratio, f"≥ {min_ratio:.0%}") if min_ratio else "",
            f"{added:+.3f}",
            h.verdict(added < max_added, f"< {max_added} ms") if max_added and conc == 1 else "",
        ])
    if table:
        out += ["", "### Kairos against the aims", ""]
        out.append(h.markdown_table(["leg", "size", "conc", "Kairos/nginx req/s", "aim",
                                     "p50 ms added vs direct", "aim (judged at conc 1)"], table))
        out += ["", "Added p50 is judged at conc 1, where the median is the service time; at "
                "higher concurrency it mostly restates the throughput gap (queueing)."]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--workers", default="1,2", help="Kairos --workers values, comma-separated")
    ap.add_argument("--sizes", default="10k,100k,1m", help="payload sizes, comma-separated")
    ap.add_argument("--connections", default="1,10,50", help="wrk -c values, comma-separated")
    ap.add_argument("--rounds", type=int, default=1, help="repeat each cell; best round counts")
    ap.add_argument("--store", default="", help="Kairos --store URL (default: embedded Valkey)")
    ap.add_argument("--kairos", action="append",
                    help="command that starts Kairos (--upstream, --port etc. are appended); "
                    'repeat as LABEL="CMD" to compare variants')
    ap.add_argument("--no-kairos", action="store_true", help="only the direct and nginx legs")
    args = ap.parse_args()
    args.sizes = [h.parse_size(s) for s in args.sizes.split(",")]
    args.connections = [int(c) for c in args.connections.split(",")]
    workers = [] if args.no_kairos else [int(w) for w in args.workers.split(",")]
    variants = _variants(args.kairos or [f"{h.REPO_DIR}/.venv/bin/kairos serve"])

    header = "\n".join([
        "## Pass-through: direct vs nginx vs Kairos",
        "",
        f"- machine: {h.machine_summary()}",
        f"- Kairos: {', '.join(f'`{c}`' for c in variants.values())} at {h.git_rev()}, "
        f"workers {workers or 'not run'}, "
        f"store {args.store or 'embedded'}",
        f"- wrk -t1, {args.duration:g} s per cell after a 1 s warm-up, best of {args.rounds}; "
        "origin and proxy nginx worker_processes 1 each; nothing pinned, all share the cores",
        f"- command: `{shlex.join(sys.argv)}`",
    ])
    rows: list[tuple] = []
    with h.temp_workdir() as wd:
        root = wd / "www"
        paths = h.make_payloads(root, args.sizes)
        with (h.nginx("origin.conf", wd, root=root) as origin,
              h.nginx("proxy.conf", wd, origin_port=origin) as proxy):
            legs = {"direct": origin, "nginx": proxy}
            if not workers:
                rows += measure(legs, paths, root, args)
            for w in workers:
                with contextlib.ExitStack() as stack:
                    ports = {
                        f"kairos{f'[{label}]' if label else ''} w={w}": stack.enter_context(
                            kairos(shlex.split(cmd), origin, w, args.store, wd, label))
                        for label, cmd in variants.items()}
                    rows += measure({**legs, **ports}, paths, root, args)
    text = report(rows, args, header)
    print(text)
    print(f"\nsaved to {h.write_result('passthrough', text + chr(10))}", file=sys.stderr)


def _variants(values: list[str]) -> dict[str, str]:
    """{label: command}; a lone unlabelled --kairos keeps the plain "kairos" leg name."""
    out = {}
    for value in values:
        label, sep, cmd = value.partition("=")
        if not sep or not label.replace("-", "").replace("_", "").isalnum():
            label, cmd = "", value        # "CMD", or a command whose first word has a "="
        out[label or f"{len(out) + 1}" if len(values) > 1 else label] = cmd
    return out


if __name__ == "__main__":
    main()
