"""What a compiled Kairos would gain: its hot modules built with mypyc, in a copy of the tree.

mypyc (mypy's compiler, which black and mypy ship their wheels with) turns type-annotated
Python modules into C extensions that behave the same where the annotations hold (and raise
``TypeError`` where they do not). This copies ``proxy/``, ``experiments/`` and ``rules/`` to
``--into``, builds there the modules a personalised view runs through (:data:`HOT_MODULES`),
checks that each one imports from its extension, and prints the commands that measure the
copy against this tree. Nothing in this tree changes: the copy is what ``PYTHONPATH`` points
at, so no stale extension can shadow an edited module.

  .venv/bin/pip install mypy        # (in the bench extra)
  .venv/bin/python bench/compiled.py [--into /tmp/kairos-compiled] [--python PYTHON]

Build with the interpreter that will run the copy (the extensions are for one CPython
version; it needs mypy installed). Measured 23 Nov 2026 (bench/README.md, "Eighth round"):
23-25% fewer instructions a view in process; served, cached views 10-20% less CPU. Left
out, and why:

- ``proxy/http_proxy.py``: an async generator (mypyc has not implemented them);
- ``proxy/context/mmdb_records.py``: the C that mypyc writes for its ``ctypes`` import
  does not compile;
- the I/O edges (``app.py``, ``http_server.py``, ``upstream_h1.py``): mypy does not pass
  them yet, and most of their time is in uvicorn, the event loop and the kernel;
- the rest: a view does not run it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HOT_MODULES = (
    "proxy/byte_splice.py", "proxy/cache/edge.py", "proxy/cache/freshness.py",
    "proxy/cache/keys.py", "proxy/client_ip.py", "proxy/codings.py",
    "proxy/context/build.py", "proxy/context/device.py", "proxy/context/geo.py",
    "proxy/context/identity.py", "proxy/context/journey.py", "proxy/context/language.py",
    "proxy/context/localtime.py", "proxy/context/model.py", "proxy/context/source.py",
    "proxy/experiment_runtime.py", "proxy/experimentation.py", "proxy/goals_script.py",
    "proxy/gzip_pieces.py", "proxy/headers.py", "proxy/page.py", "proxy/page_cache.py",
    "proxy/page_memo.py", "proxy/personalisation.py", "proxy/rules/compiled.py",
    "proxy/rules/engine.py", "proxy/rules/html.py", "proxy/rules/matching.py",
    "proxy/rules/pages.py", "proxy/rules/placeholders.py", "proxy/rules/plan.py",
    "proxy/rules/ruleset.py", "proxy/signing.py", "proxy/visitor.py",
    "proxy/visitor_outcome.py", "experiments/assignment.py",
)


def module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def copy_tree(into: Path) -> None:
    """A fresh copy of the packages (sources only: no extension of an earlier build) and of
    what they find beside them (the demo's rules folder, the default config)."""
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.pyc")
    for folder in ("proxy", "experiments", "rules"):
        shutil.copytree(ROOT / folder, into / folder, ignore=ignore)
    shutil.copy2(ROOT / "config.toml", into / "config.toml")


def build(into: Path, python: str) -> None:
    """mypyc over :data:`HOT_MODULES`; stops with mypy's messages if the types do not hold."""
    command = [python, "-m", "mypyc", "--ignore-missing-imports", *HOT_MODULES]
    done = subprocess.run(command, cwd=into, capture_output=True, text=True)
    if done.returncode != 0:
        errors = [line for line in (done.stdout + done.stderr).splitlines()
                  if " error: " in line or "Error" in line]
        sys.exit("mypyc failed in " + str(into) + ":\n" + "\n".join(errors[-30:]))


def check_compiled(into: Path, python: str) -> None:
    """Every hot module imports from its extension, not from its source."""
    names = [module_name(path) for path in HOT_MODULES]
    probe = ("import importlib\n"
             f"modules = [importlib.import_module(n) for n in {names!r}]\n"
             "print(' '.join(m.__name__ for m in modules if not m.__file__.endswith('.so')))\n")
    done = subprocess.run([python, "-c", probe], cwd=into, capture_output=True, text=True,
                          env={"PYTHONPATH": str(into), "PATH": "/usr/bin:/bin"})
    if done.returncode != 0 or done.stdout.strip():
        sys.exit(f"not compiled in {into}: {done.stdout.strip()}{done.stderr[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--into", type=Path, default=Path("/tmp/kairos-compiled"),
                    help="where the compiled copy goes (emptied first)")
    ap.add_argument("--python", default=sys.executable,
                    help="the interpreter that builds it and will run it")
    args = ap.parse_args()
    into = args.into.resolve()
    started = time.monotonic()
    copy_tree(into)
    build(into, args.python)
    check_compiled(into, args.python)
    # The console script, not ``python -m``: that puts the working directory, this tree,
    # ahead of PYTHONPATH.
    kairos = Path(args.python).with_name("kairos")
    print(f"{len(HOT_MODULES)} modules compiled into {into} in "
          f"{time.monotonic() - started:.0f} s. Measure them against this tree:\n"
          f"  PYTHONPATH={into} {args.python} bench/hot_view.py\n"
          f"  taskset -c 0 {sys.executable} bench/personalised.py --sizes 100k --corpus '' "
          f"--no-memory --workers 1 --connections 1,10 --rounds 3 --proxy-cpus 1 \\\n"
          f"    --kairos \"taskset -c 1 env PYTHONPATH={ROOT} {kairos} serve\" \\\n"
          f"    --compare \"taskset -c 1 env PYTHONPATH={into} {kairos} serve\"")


if __name__ == "__main__":
    main()
