"""The group-commit helper: a small process that fsyncs the files the recorder writes.

Why a process and not a thread: an fdatasync costs tens of microseconds of kernel
time per file, several files every few milliseconds, and a thread doing them inside
the gateway hands the GIL back and forth with the event loop around every call.
The helper holds its own descriptors of the same files (passed with SCM_RIGHTS)
and keeps the group-commit timer itself, so the gateway pays one send(2) per file
per window and never wakes a thread for it.

Messages on a SOCK_SEQPACKET socketpair, one per datagram:

    gateway -> helper   A<name>            add (one descriptor attached; replaces)
                        D<name>            drop (close it)
                        S<name> <name>...  written to: sync within the interval
    helper -> gateway   F<name> <errno>    that sync failed

A file is synced ``interval`` after the first request that found it clean, so
everything written before that moment is covered; the gateway asks again for
what it writes later (``SessionRecording`` keeps that deadline). Names are
session ids, or "/..." for the sessions directory and the ledger, which are
synced (fsync) before any session file in the same pass.

When the gateway's end closes, whether it exited, crashed or was killed, the helper
syncs every file it still holds once more, then exits: a killed gateway's last
window of records still reaches the disk.

The helper runs this file with ``python -I -S`` (no site, no environment, no
package import): it needs only the standard library.
"""

from __future__ import annotations

import array
import contextlib
import errno
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time

log = logging.getLogger(__name__)

MAX_MESSAGE = 1 << 16
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
_FD_SPACE = socket.CMSG_LEN(array.array("i").itemsize)


# socket.send_fds/recv_fds drop their flags before Python 3.12: the calls, with flags.
def _send(sock: socket.socket, message: bytes, fds: tuple[int, ...], flags: int) -> None:
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([message], rights, flags)


def _recv(sock: socket.socket, flags: int) -> tuple[bytes, list[int]]:
    msg, ancdata, _flags, _addr = sock.recvmsg(MAX_MESSAGE, _FD_SPACE, flags)
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return msg, list(fds)


class HelperGone(OSError):
    """The helper cannot take requests (exited, or too far behind)."""


class SyncHelper:
    """The gateway's side: start the helper, hand it files, ask for syncs."""

    def __init__(self, interval: float) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Born with SIGTERM blocked (the mask survives exec), so that a stop signal sent
        # before the helper has set it to ignored cannot kill it; main() unblocks.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", __file__, str(theirs.fileno()), repr(interval)],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                cwd="/",
            )
        except BaseException:
            mine.close()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            theirs.close()
        self._sock = mine

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _send(self, message: bytes, fds: tuple[int, ...] = ()) -> None:
        # Never blocks: a helper that stopped reading counts as gone.
        try:
            _send(self._sock, message, fds, socket.MSG_DONTWAIT)
        except OSError as exc:
            raise HelperGone(exc.errno or errno.EPIPE, f"the fsync helper is gone ({exc})") from exc

    def add(self, name: str, fd: int) -> None:
        self._send(b"A" + name.encode("ascii"), (fd,))

    def drop(self, name: str) -> None:
        self._send(b"D" + name.encode("ascii"))

    def sync(self, names: list[str]) -> None:
        if names:
            self._send(b"S" + " ".join(names).encode("ascii"))

    def failures(self) -> list[tuple[str, int]]:
        """Syncs the helper reported as failed since the last call: (name, errno)."""
        out = []
        while True:
            try:
                msg = self._sock.recv(MAX_MESSAGE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return out
            except OSError as exc:
                raise HelperGone(exc.errno or errno.EPIPE, f"the fsync helper is gone ({exc})") from exc
            if not msg:
                raise HelperGone(errno.EPIPE, "the fsync helper exited")
            name, _, code = msg[1:].decode("ascii", "replace").partition(" ")
            out.append((name, int(code) if code.isdigit() else errno.EIO))

    def close(self, timeout: float = 10.0) -> None:
        """Close our end: the helper syncs what it holds and exits (wait ``timeout`` for it)."""
        self._sock.close()
        if timeout <= 0:
            self._proc.poll()
            return
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("the fsync helper did not exit within %.0f s; killing it", timeout)
            self._proc.kill()
            self._proc.wait()


# ---------------------------------------------------------------- the helper process


def _sync(fds: dict[str, int], names: list[str], sock: socket.socket) -> None:
    for name in names:
        fd = fds.get(name)
        if fd is None:
            continue
        try:
            if name.startswith("/"):
                os.fsync(fd)
            else:
                os.fdatasync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                sock.send(f"F{name} {exc.errno or errno.EIO}".encode("ascii"), socket.MSG_DONTWAIT)


def _take(sock: socket.socket, fds: dict[str, int], due: dict[str, float], interval: float) -> bool:
    """Apply every queued message; False once the gateway's end is closed."""
    while True:
        try:
            msg, got = _recv(sock, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        if not msg:
            return False
        op, name = msg[:1], msg[1:].decode("ascii", "replace")
        if op == b"A" and got:
            old = fds.pop(name, None)
            if old is not None:
                os.close(old)
            fds[name] = got.pop(0)
        elif op == b"D":
            old = fds.pop(name, None)
            if old is not None:
                os.close(old)
            due.pop(name, None)
        elif op == b"S":
            when = time.monotonic() + interval
            for each in name.split(" "):
                due.setdefault(each, when)
        for stray in got:
            os.close(stray)


def serve(sock: socket.socket, interval: float) -> None:
    """Take requests until the other end closes; then sync everything once more."""
    fds: dict[str, int] = {}
    due: dict[str, float] = {}  # name -> when to sync it
    while True:
        timeout = max(0.0, min(due.values()) - time.monotonic()) if due else None
        readable, _, _ = select.select([sock], [], [], timeout)
        if readable and not _take(sock, fds, due, interval):
            break
        now = time.monotonic()
        ready = [name for name, when in due.items() if when <= now]
        if ready:
            # The directory and the ledger first: a session file must never be durable
            # while the ledger entry that registers it is not.
            shared = [name for name in due if name.startswith("/")]
            names = shared + [name for name in ready if not name.startswith("/")]
            for name in names:
                del due[name]
            _sync(fds, names, sock)
    _sync(fds, sorted(fds, key=lambda name: not name.startswith("/")), sock)


def main(argv: list[str]) -> int:
    # Stopping is the gateway's decision: a SIGTERM to the whole unit must not cut the
    # last syncs short. The helper exits when the gateway's end of the socket closes.
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    sock = socket.socket(fileno=int(argv[0]))
    serve(sock, float(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
