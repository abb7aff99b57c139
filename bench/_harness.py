"""Shared pieces for Kairos benchmarks.

Benchmarks here compare Kairos with nginx and with raw clients on loopback, so
every script needs the same chores: pick free ports, write payload files, start
nginx from a template in bench/nginx/ with everything (pid, logs, temp dirs) in
a throwaway directory, wait for a port, and run wrk and parse its report. They
live here so that each benchmark script stays short and they all measure the
same way.

Nothing here talks to anything but 127.0.0.1, and every process started is
stopped by the context manager that started it.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
NGINX_TEMPLATES = BENCH_DIR / "nginx"
RESULTS_DIR = BENCH_DIR / "results"
NGINX_BIN = shutil.which("nginx") or "/usr/sbin/nginx"
WRK_BIN = shutil.which("wrk") or "/usr/bin/wrk"

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


# --------------------------------------------------------------------- sizes


def parse_size(text: str) -> int:
    """'10k' -> 10240, '1m' -> 1048576 (binary units, as payload sizes)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def size_label(n: int) -> str:
    """Inverse of parse_size for round numbers: 10240 -> '10k'."""
    for unit in ("g", "m", "k"):
        if n >= _UNITS[unit] and n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


def make_payloads(
    root: Path, sizes: Sequence[int], *, compressible: bool = False
) -> dict[int, str]:
    """Write one file per size under root; return {size: url path}.

    Incompressible (seeded random) bytes by default, so that nothing on the
    path can win by compressing; compressible=True writes repetitive text for
    gzip checks.
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1234)
    paths = {}
    for size in sizes:
        name = f"{size_label(size)}.{'txt' if compressible else 'bin'}"
        if compressible:
            line = b"kairos edge proxy benchmark payload line 0123456789\n"
            data = (line * (size // len(line) + 1))[:size]
        else:
            data = rng.randbytes(size)
        (root / name).write_bytes(data)
        paths[size] = "/" + name
    return paths


# --------------------------------------------------------------------- ports


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (tiny race, fine for benches)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Block until GET url answers 2xx; fail early if proc has exited."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if 200 <= resp.status < 300:
                    return
                last = resp.status
        except Exception as exc:  # anything means 'not yet'
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 2xx within {timeout}s (last: {last!r})")


# --------------------------------------------------------------------- processes


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Stop a process we started: `sig` to it alone (so it can shut down its own
    children in order, as nginx's master and `kairos serve` do), then SIGKILL to
    its process group if it hangs, and SIGTERM to anything it left behind."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)  # started with start_new_session: pgid == pid


@contextlib.contextmanager
def process(
    argv: Sequence[str], *, log: Path | None = None, env: dict | None = None,
    cpus: str | None = None, cwd: Path | None = None,
) -> Iterator[subprocess.Popen]:
    """Run argv in its own process group for the duration of the with-block.

    cpus (e.g. "0" or "0,1") pins it and its children with taskset.
    """
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
            cwd=cwd,
        )
        try:
            yield proc
        finally:
            stop_process(proc)
    finally:
        if log:
            out.close()


# --------------------------------------------------------------------- nginx


def render_template(name: str, **values: object) -> str:
    """Fill @NAME@-style placeholders in bench/nginx/<name> (nginx itself owns '$' and '{}')."""
    text = (NGINX_TEMPLATES / name).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key.upper()}@", str(value))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise KeyError(f"{name}: unfilled placeholders {sorted(set(left))}")
    return text


@contextlib.contextmanager
def nginx(
    template: str, workdir: Path, *, port: int | None = None, cpus: str | None = None,
    **values: object,
) -> Iterator[int]:
    """Start nginx (master + 1 worker, foreground) from a template; yield its port.

    Everything nginx writes goes under workdir/<template stem>-<port>/. The
    directory is made world-traversable because nginx started as root runs its
    worker as 'nobody', which must still read the payload files.
    """
    port = port or free_port()
    prefix = workdir / f"{Path(template).stem}-{port}"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    for d in (workdir, prefix):
        d.chmod(0o755)
    conf = prefix / "nginx.conf"
    conf.write_text(render_template(template, port=port, prefix=prefix, **values))
    argv = [NGINX_BIN, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"),
            "-g", "daemon off;"]
    with process(argv, log=prefix / "stdout.log", cpus=cpus) as proc:
        try:
            wait_port(port)
        except TimeoutError:
            err = (prefix / "error.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"nginx ({template}) did not start:\n{err}") from None
        if proc.poll() is not None:
            raise RuntimeError(f"nginx ({template}) exited with {proc.returncode}")
        yield port
        # SIGQUIT = graceful shutdown; stop_process escalates if it hangs.
        stop_process(proc, signal.SIGQUIT)


@contextlib.contextmanager
def temp_workdir(prefix: str = "kairos-bench-") -> Iterator[Path]:
    """A temp directory removed afterwards (nginx confs, payloads, logs)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors + non-2xx/3xx responses
    raw: str


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        raise ValueError(f"wrk latency {value!r}")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def parse_wrk(text: str) -> WrkResult:
    """Parse `wrk --latency` output (wrk 4.x)."""
    pct = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", text, re.MULTILINE))
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    total = re.search(r"^\s+(\d+) requests in", text, re.MULTILINE)
    if not (rps and total and "50" in pct and "99" in pct):
        raise ValueError(f"unrecognised wrk output:\n{text}")
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx:
        errors += int(non2xx.group(1))
    return WrkResult(float(rps.group(1)), _ms(pct["50"]), _ms(pct["99"]),
                     int(total.group(1)), errors, text)


def run_wrk(url: str, *, connections: int, duration: float, threads: int = 1,
            cpus: str | None = None) -> WrkResult:
    """Run wrk once against a loopback URL; cpus='0' pins it with taskset."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("benchmarks only target 127.0.0.1")
    argv = [WRK_BIN, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency",
            "--timeout", "5s", url]
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=True)
    return parse_wrk(out.stdout)


# --------------------------------------------------------------------- output


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; numbers are expected pre-formatted."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(name: str, text: str) -> Path:
    """Save a result under bench/results/ (git-ignored) with a timestamp."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.md"
    path.write_text(text)
    return path


def machine_summary() -> str:
    """One line describing the machine, for result files."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({model}), Linux {os.uname().release}"


_INTERPRETER_PROBE = (
    "import platform, sysconfig; "
    "flags = [f for f in ('--enable-optimizations', '--with-lto') "
    "if f in (sysconfig.get_config_var('CONFIG_ARGS') or '')]; "
    "print(platform.python_implementation(), platform.python_version(), ' '.join(flags))"
)


def interpreter_summary(pid: int | None = None) -> str:
    """Which Python a process runs (this one without ``pid``), for result files.

    The build matters as much as the version: on Debian's python3.11, built with
    profile-guided optimisation and LTO, a Kairos view took 11% fewer instructions and 14%
    less time than on pyenv's default build of 3.11 (bench/README.md, "Seventh round").
    Shown: the executable, its version, whether libpython is a shared library (read from
    the process's mappings), and the optimisation flags ``./configure`` was given when
    sysconfig names them; Debian's build has them without naming them there.
    """
    exe = Path(f"/proc/{pid or os.getpid()}/exe")
    try:
        path = os.readlink(exe)
        maps = Path(f"/proc/{pid or os.getpid()}/maps").read_text()
    except OSError:
        return "unknown (process gone)"
    try:
        probe = subprocess.run([path, "-c", _INTERPRETER_PROBE], capture_output=True,
                               text=True, timeout=30, check=True).stdout.split(maxsplit=2)
    except (OSError, subprocess.SubprocessError):
        return f"{path} (did not answer)"
    implementation, version = probe[0], probe[1]
    flags = probe[2].strip() if len(probe) > 2 else ""
    libpython = "shared libpython" if "/libpython" in maps else "libpython built in"
    configured = f"configured {flags}" if flags else "no optimisation flag in sysconfig"
    return f"{implementation} {version} at {path} ({libpython}; {configured})"


# --------------------------------------------------------------------- wrk with a script


def run_wrk_script(url: str, script: Path | str, script_args: Sequence[str] = (), *,
                   connections: int, duration: float, threads: int = 1,
                   cpus: str | None = None) -> WrkResult:
    """run_wrk with a Lua script (`wrk -s script url -- args...`); same report."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("benchmarks only target 127.0.0.1")
    argv = [WRK_BIN, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency",
            "--timeout", "5s", "-s", str(script), url]
    if script_args:
        argv += ["--", *script_args]
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=True)
    return parse_wrk(out.stdout)


# --------------------------------------------------------------------- /proc


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cmdline(pid: int) -> str:
    """The command line of a process ('' if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""


def proc_children(pid: int) -> list[int]:
    """Direct children of pid (scans /proc: works without CONFIG_PROC_CHILDREN)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(entry.name))
    return sorted(out)


def proc_memory_kb(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS), RssAnon (private memory), RssFile (mapped files, e.g. the
    GeoIP database: shared by every process mapping it, dropped under memory pressure) etc.
    of a process from /proc/<pid>/status, in kB ({} if gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("Vm", "Rss")) and line.endswith(" kB"):
                name, value = line.split(":", 1)
                out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


def reset_peak_rss(pid: int) -> bool:
    """Reset a process's VmHWM to its current RSS (`echo 5 > /proc/<pid>/clear_refs`,
    Linux >= 4.0, needs to own the process); False if that is not possible."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0.0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK   # utime, stime


class PeakRss:
    """Peak resident memory of some processes over a with-block.

    Resets each process's VmHWM on entry (when the kernel lets us) and reads it on exit;
    meanwhile samples VmRSS every `interval` s in a thread, so the peak is known even where
    VmHWM cannot be reset. `peak_kb[pid]` is the larger of the two.
    """

    def __init__(self, pids: Sequence[int], interval: float = 0.05) -> None:
        import threading
        self.pids = list(pids)
        self.interval = interval
        self.peak_kb: dict[int, int] = {}
        self.peak_anon_kb: dict[int, int] = {}   # private memory (sampled: no kernel peak)
        self.file_kb: dict[int, int] = {}   # mapped files when RSS peaked (sampled)
        self.hwm_reset = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self.hwm_reset = all([reset_peak_rss(pid) for pid in self.pids])
        self._thread.start()
        return self

    def _sample(self) -> None:
        while True:
            for pid in self.pids:
                now = proc_memory_kb(pid)
                rss = now.get("VmRSS", 0)
                if rss > self.peak_kb.get(pid, 0):
                    self.peak_kb[pid] = rss
                    self.file_kb[pid] = now.get("RssFile", 0)
                self.peak_anon_kb[pid] = max(self.peak_anon_kb.get(pid, 0),
                                             now.get("RssAnon", 0))
            if self._stop.wait(self.interval):
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.hwm_reset:
            for pid in self.pids:
                hwm = proc_memory_kb(pid).get("VmHWM", 0)
                self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), hwm)


def verdict(ok: bool, aim: str) -> str:
    """How a measurement fares against an aim, for the reports' tables."""
    return f"{'met' if ok else 'MISSED'} ({aim})"


def git_rev() -> str:
    """The revision being measured (with -dirty for uncommitted changes)."""
    try:
        rev = subprocess.run(["git", "-C", str(REPO_DIR), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        rev = ""
    return rev or "unknown revision"
