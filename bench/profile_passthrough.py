"""Where does Kairos spend its CPU on the pass-through path?

Starts an nginx origin with one payload, `kairos serve --workers 1` in front of it (in a temp
directory: defaults, embedded Valkey), drives it with wrk, and reports Kairos's CPU time per
request (user + system, from /proc, so it is independent of how busy the machine is) and,
with --py-spy, a sampled profile of the worker. With one worker uvicorn serves in the
`kairos serve` process itself, so that is the process measured.

  .venv/bin/python bench/profile_passthrough.py --size 10k --conc 10 --duration 10 \
      [--env KAIROS_UPSTREAM_CLIENT=h1] [--py-spy out.txt] [--native]

--py-spy writes py-spy's collapsed stacks (one line per stack, count at the end) and prints
the top functions by self and by inclusive samples. py-spy is a dev tool
(`.venv/bin/pip install py-spy`), not a dependency.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


_LAYERS = ("proxy/", "aiohttp/", "uvicorn/", "asyncio/", "httptools/", "uvloop/", "yarl/",
           "multidict/")


def _function(frame: str) -> str:
    """'name (path/file.py:123)' -> 'name (path/file.py)': lines merged per function."""
    return re.sub(r":\d+\)$", ")", frame)


def _layer(frame: str) -> str:
    return next((layer for layer in _LAYERS if layer in frame), "other (event loop, C, ...)")


def top(collapsed: Path, n: int = 30) -> str:
    """Self time by layer, then top functions by self and inclusive samples."""
    self_c: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    layers: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        k = int(count)
        total += k
        frames = [_function(f) for f in stack.split(";")]
        self_c[frames[-1]] += k
        layers[_layer(frames[-1])] += k
        for f in set(frames):
            incl[f] += k
    out = [f"{total} samples", "", "self, by layer:"]
    out += [f"  {c / total:6.1%}  {f}" for f, c in layers.most_common()]
    out += ["", "self:"]
    out += [f"  {c / total:6.1%}  {f}" for f, c in self_c.most_common(n)]
    out += ["", "inclusive:"]
    out += [f"  {c / total:6.1%}  {f}" for f, c in incl.most_common(n)]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="10k")
    ap.add_argument("--conc", type=int, default=10)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for Kairos")
    ap.add_argument("--py-spy", dest="pyspy", help="write collapsed stacks here")
    ap.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--kairos", default=f"{h.REPO_DIR}/.venv/bin/kairos serve")
    args = ap.parse_args()
    size = h.parse_size(args.size)
    env = dict(os.environ)
    env.update(kv.split("=", 1) for kv in args.env)
    with h.temp_workdir() as wd:
        root = wd / "www"
        path = h.make_payloads(root, [size])[size]
        with h.nginx("origin.conf", wd, root=root) as origin:
            port = h.free_port()
            argv = [*args.kairos.split(), "--upstream", f"http://127.0.0.1:{origin}",
                    "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
            (wd / "k").mkdir()
            with h.process(argv, log=wd / "k" / "kairos.log", env=env, cwd=wd / "k") as proc:
                h.wait_http(f"http://127.0.0.1:{port}/_kairos/health", timeout=60, proc=proc)
                url = f"http://127.0.0.1:{port}{path}"
                h.run_wrk(url, connections=args.conc, duration=1)
                spy = None
                if args.pyspy:
                    cmd = ["py-spy", "record", "--pid", str(proc.pid), "--format", "raw",
                           "--rate", str(args.rate), "--output", args.pyspy,
                           "--duration", str(int(args.duration))]
                    if args.native:
                        cmd.append("--native")
                    spy = subprocess.Popen([str(Path(sys.executable).parent / cmd[0]), *cmd[1:]],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(0.5)
                c0 = cpu_seconds(proc.pid)
                r = h.run_wrk(url, connections=args.conc, duration=args.duration)
                c1 = cpu_seconds(proc.pid)
                if spy is not None:
                    spy.wait(60)
    print(f"{args.size} c={args.conc} env={args.env}: {r.rps:,.0f} req/s, p50 {r.p50_ms:.3f} ms,"
          f" p99 {r.p99_ms:.3f} ms, errors {r.errors}, "
          f"Kairos CPU {1e6 * (c1 - c0) / max(r.requests, 1):.0f} µs/request")
    if args.pyspy and Path(args.pyspy).is_file():
        print(top(Path(args.pyspy)))


if __name__ == "__main__":
    main()
