"""How much does Kairos cost on the pass-through path, compared with nginx?

Most requests through Kairos match no experiment and are simply streamed from
the origin, so pass-through speed bounds the whole product. This script
measures, in one run and against one nginx origin serving static files:

  direct   wrk -> origin
  nginx    wrk -> nginx reverse proxy (keep-alive upstream) -> origin
  kairos   wrk -> `kairos serve --upstream origin` (per --workers value) -> origin

at each payload size and wrk concurrency, and reports requests/s, p50/p99
latency, Kairos/nginx throughput and the median latency Kairos adds over going
direct, against the project's aims (see AIMS).

Machine sharing: wrk (one thread), both nginx roles (worker_processes 1 each)
and Kairos (--workers N) all share the machine's cores, unpinned. Numbers are
for comparing legs within one run, not for comparing machines.

Usage: .venv/bin/python bench/passthrough.py [--duration 5] [--workers 1,2]
           [--sizes 10k,100k,1m] [--connections 1,10,50] [--store URL]
           [--kairos "CMD"]   # default: .venv/bin/kairos serve
Output: markdown on stdout and in bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h

# size -> (min Kairos/nginx throughput, max added p50 ms vs direct or None)
AIMS = {10 * 1024: (0.25, 0.5), 100 * 1024: (0.60, None), 1024 * 1024: (0.85, None)}


@contextlib.contextmanager
def kairos(cmd: list[str], origin: int, workers: int, store: str, workdir: Path) -> Iterator[int]:
    """Run Kairos in front of the origin until the with-block ends; yield its port."""
    port = h.free_port()
    argv = [*cmd, "--upstream", f"http://127.0.0.1:{origin}", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers)]
    if store:
        argv += ["--store", store]
    log = workdir / f"kairos-w{workers}.log"
    with h.process(argv, log=log) as proc:
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


def measure(leg: str, port: int, paths: dict[int, str], root: Path, args) -> list[tuple]:
    """wrk over every size x concurrency for one leg; rows of (leg, size, conc, WrkResult)."""
    rows = []
    for size in args.sizes:
        check_body(port, paths[size], (root / paths[size].lstrip("/")).read_bytes())
        for conc in args.connections:
            url = f"http://127.0.0.1:{port}{paths[size]}"
            h.run_wrk(url, connections=conc, duration=1)  # warm-up: pools, caches
            r = h.run_wrk(url, connections=conc, duration=args.duration)
            print(f"  {leg:10} {h.size_label(size):>4} c={conc:<3} {r.rps:9.0f} req/s  "
                  f"p50 {r.p50_ms:7.3f} ms  p99 {r.p99_ms:7.3f} ms  err {r.errors}",
                  file=sys.stderr)
            rows.append((leg, size, conc, r))
    return rows


def report(rows: list[tuple], args, header: str) -> str:
    by = {(leg, size, conc): r for leg, size, conc, r in rows}
    legs = list(dict.fromkeys(leg for leg, *_ in rows))
    kairos_legs = [leg for leg in legs if leg.startswith("kairos")]
    out = [header, "", "### Raw numbers", ""]
    out.append(h.markdown_table(
        ["size", "conc", "leg", "req/s", "p50 ms", "p99 ms", "errors"],
        [[h.size_label(s), c, leg, f"{r.rps:,.0f}", f"{r.p50_ms:.3f}", f"{r.p99_ms:.3f}",
          r.errors] for leg, s, c, r in sorted(rows, key=lambda t: (t[1], t[2]))]))
    if kairos_legs:
        out += ["", "### Kairos against the aims", ""]
        table = []
        for leg in kairos_legs:
            for size in args.sizes:
                min_ratio, max_added = AIMS.get(size, (None, None))
                for conc in args.connections:
                    k, n, d = by[leg, size, conc], by["nginx", size, conc], by["direct", size, conc]
                    ratio, added = k.rps / n.rps, k.p50_ms - d.p50_ms
                    table.append([
                        leg, h.size_label(size), conc, f"{ratio:.0%}",
                        _verdict(ratio >= min_ratio, f"≥ {min_ratio:.0%}") if min_ratio else "",
                        f"{added:+.3f}",
                        _verdict(added < max_added, f"< {max_added} ms") if max_added else "",
                    ])
        out.append(h.markdown_table(["leg", "size", "conc", "Kairos/nginx req/s", "aim",
                                     "added p50 ms vs direct", "aim"], table))
        out += ["", "Added p50 is most meaningful at conc 1 (no queueing); at higher "
                "concurrency it mostly restates the throughput gap."]
    return "\n".join(out)


def _verdict(ok: bool, aim: str) -> str:
    return f"{'met' if ok else 'MISSED'} ({aim})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--workers", default="1,2", help="Kairos --workers values, comma-separated")
    ap.add_argument("--sizes", default="10k,100k,1m", help="payload sizes, comma-separated")
    ap.add_argument("--connections", default="1,10,50", help="wrk -c values, comma-separated")
    ap.add_argument("--store", default="", help="Kairos --store URL (default: embedded Valkey)")
    ap.add_argument("--kairos", default=f"{h.REPO_DIR}/.venv/bin/kairos serve",
                    help="command that starts Kairos (the --upstream/--port/... args are added)")
    ap.add_argument("--no-kairos", action="store_true", help="only the direct and nginx legs")
    args = ap.parse_args()
    args.sizes = [h.parse_size(s) for s in args.sizes.split(",")]
    args.connections = [int(c) for c in args.connections.split(",")]
    workers = [] if args.no_kairos else [int(w) for w in args.workers.split(",")]

    header = "\n".join([
        "## Pass-through: direct vs nginx vs Kairos",
        "",
        f"- machine: {h.machine_summary()}",
        f"- Kairos: `{args.kairos}` at {_git_rev()}, workers {workers or 'not run'}, "
        f"store {args.store or 'embedded'}",
        f"- wrk -t1, {args.duration:g} s per cell after a 1 s warm-up; origin and proxy nginx "
        "worker_processes 1 each; nothing pinned, all share the cores",
        f"- command: `{shlex.join(sys.argv)}`",
    ])
    rows: list[tuple] = []
    with h.temp_workdir() as wd:
        root = wd / "www"
        paths = h.make_payloads(root, args.sizes)
        with h.nginx("origin.conf", wd, root=root) as origin:
            rows += measure("direct", origin, paths, root, args)
            with h.nginx("proxy.conf", wd, origin_port=origin) as proxy:
                rows += measure("nginx", proxy, paths, root, args)
            for w in workers:
                with kairos(shlex.split(args.kairos), origin, w, args.store, wd) as port:
                    rows += measure(f"kairos w={w}", port, paths, root, args)
    text = report(rows, args, header)
    print(text)
    print(f"\nsaved to {h.write_result('passthrough', text + chr(10))}", file=sys.stderr)


def _git_rev() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(h.REPO_DIR), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        rev = ""
    return rev or "unknown revision"


if __name__ == "__main__":
    main()
