"""The agent daemon: inotify on the watched trees, periodic process/socket passes, policy, actions.

Threads, and why:
- main: signals (SIGTERM/SIGINT stop, SIGHUP reload), sd_notify (READY after the first full scan,
  STATUS, WATCHDOG at half of $WATCHDOG_USEC, STOPPING), the status file, periodic rescans of
  trees left unwatched by the watch limit. It never does slow work, so the watchdog keeps pinging.
- inotify reader (`watch.Watcher`, on watchdog's inotify layer): keeps the watch tree, feeds the
  debounced `WorkQueue`.
- file worker: checks queued files (read safely through `pathfd`, never following a symlink nor
  blocking on a FIFO, size-capped), rescans new directories and trees, and quarantines.
- process pass: every `tunnel_interval` a process/socket snapshot for tunnels (orphans, which
  need each process's environment, every `orphan_interval`), and terminate/adopt. Terminating
  waits for a grace period, so it runs here, away from file handling.

A failure while handling one event or one pass is logged and counted; the daemon carries on.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import gc
import logging
import os
import pwd
import select
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

from hoopctl.agent import logs
from hoopctl.agent.actions import Actor, Outcome
from hoopctl.agent.config import AgentConfig, ConfigError, existing_roots, load_config
from hoopctl.agent.listeners import listeners
from hoopctl.agent.notify import Notifier, watchdog_interval
from hoopctl.agent.policy import Decision, Subject, decide, parse_targets
from hoopctl.agent.status import Status, write_status
from hoopctl.agent.watch import Job, Watcher, WorkQueue, max_user_watches
from hoopctl.detect import Detector, Match
from hoopctl.host import pathfd
from hoopctl.host.safefs import BINARY_PROBE, Walker

log = logging.getLogger(__name__)
event = logs.event

SEEN_MAX = 50_000  # findings remembered so that a report is logged once, not on every write


class _Waker:
    """Wakes the main loop; safe to set from a signal handler (a pipe, no lock)."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def set(self) -> None:
        try:
            os.write(self._w, b"x")
        except BlockingIOError:  # already full of wake-ups
            pass

    def wait(self, timeout: float) -> None:
        """Returns when set (then cleared) or after `timeout` seconds."""
        select.select([self._r], [], [], timeout)
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass


class Agent:
    """One running agent. `run()` blocks until SIGTERM/SIGINT (or `stop()`) and returns the exit code."""

    def __init__(self, config: AgentConfig, *, apply: bool = False, notifier: Notifier | None = None) -> None:
        self.apply = apply
        self.config = config.with_enforce(apply)
        self.notifier = notifier or Notifier()
        self.status = Status(self.config.mode)
        self.detector = Detector.default()
        self.queue = WorkQueue(self.config.files.debounce, self.config.files.debounce_max)
        self.actor = Actor(self.config.vault, self.config.gateway_socket, grace=self.config.procs.grace)
        self.watcher: Watcher | None = None
        self._stop = threading.Event()
        self._wake = _Waker()
        # Set by the signal handler, acted on by the main loop (a handler must take no lock).
        self._reload_requested = False
        self._stop_requested = False
        self._seen: collections.OrderedDict[tuple[str, str, str], str] = collections.OrderedDict()
        self._seen_procs: set[tuple[Any, ...]] = set()
        self._users: dict[int, str] = {}
        self._threads: list[threading.Thread] = []
        self._limit_reported = False
        self._tunnel_due: float | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _on_signal(self, signum: int, _frame: object) -> None:
        # Runs in the main thread between two bytecodes, perhaps while that thread holds a
        # threading lock (an Event's): taking one here could deadlock. Flags and a pipe only.
        if signum == signal.SIGHUP:
            self._reload_requested = True
        else:
            self._stop_requested = True
        self._wake.set()

    def _stopping(self) -> bool:
        if self._stop_requested and not self._stop.is_set():
            self._stop.set()  # the worker threads wait on this Event
        return self._stop.is_set()

    def _skip_dirs(self) -> tuple[str, ...]:
        return (os.path.normpath(self.config.vault), os.path.normpath(self.config.state_dir))

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        cfg = self.config
        event("agent.start", pid=os.getpid(), mode=cfg.mode, config=cfg.file)
        self.watcher = Watcher(
            self.queue,
            exclude=cfg.files.exclude,
            skip_dirs=self._skip_dirs(),
            on_limit=self._on_watch_limit,
            on_overflow=self._on_overflow,
        )
        roots = existing_roots(cfg.files.watch, self._skip_dirs())
        self._sync_roots(roots)
        self._spawn("files", self._file_worker)
        scan = self._spawn("full-scan", self._full_scan, roots) if cfg.files.full_scan else None
        ping = watchdog_interval()
        tick = min(x for x in (ping, cfg.status_interval, 1.0) if x)
        while scan is not None and scan.is_alive() and not self._stopping():
            if ping:
                self.notifier.watchdog()
            self._wake.wait(tick)
        if self._stopping():
            return self._shutdown()
        if cfg.procs.enabled:
            self._spawn("processes", self._process_loop)
        self.status.set(state="running")
        self._write_status()
        self.notifier.ready(self.status.line())
        event("agent.ready", watches=self.status.watches, roots=len(self.status.roots), mode=cfg.mode)
        next_status = next_ping = time.monotonic()
        next_unwatched = time.monotonic() + cfg.files.rescan_unwatched
        while not self._stopping():
            now = time.monotonic()
            if ping and now >= next_ping:
                self.notifier.watchdog()
                next_ping = now + ping
            if self._reload_requested:
                self._reload_requested = False
                self._do_reload()
            if self.watcher is not None and self.watcher.unwatched and not self._limit_reported:
                self._report_unwatched()  # the limit was hit by a directory created since start
            if now >= next_status:
                self._write_status()
                self.notifier.status(self.status.line())
                next_status = now + self.config.status_interval
            if now >= next_unwatched:
                self._rescan_unwatched()
                next_unwatched = now + self.config.files.rescan_unwatched
            wait = min(next_status, next_unwatched, next_ping if ping else next_status) - time.monotonic()
            self._wake.wait(max(0.01, wait))
        return self._shutdown()

    def _shutdown(self) -> int:
        self.status.set(state="stopping")
        self.notifier.stopping(self.status.line())
        event("agent.stopping")
        self.queue.close()
        if self.watcher is not None:
            self.watcher.stop()
        for t in self._threads:
            t.join(timeout=max(10.0, self.config.procs.grace * 2))
        self.actor.close()
        self.status.set(state="stopped")
        self._write_status()
        event("agent.stopped")
        return 0

    def _spawn(self, name: str, target: Any, *args: Any) -> threading.Thread:
        t = threading.Thread(target=target, args=args, name=f"agent-{name}", daemon=True)
        t.start()
        self._threads.append(t)
        return t

    def _write_status(self) -> None:
        if self.watcher is not None:
            self.status.set(
                watches=self.watcher.watch_count(),
                roots=self.watcher.roots,
                unwatched=sorted(self.watcher.unwatched)[:100],
            )
        try:
            write_status(self.config.state_dir, self.status.snapshot())
        except OSError as exc:
            self._error("status", f"cannot write status to {self.config.state_dir}: {exc.strerror or exc}")

    def _error(self, where: str, message: str) -> None:
        self.status.error(where, message)
        event("error", logging.ERROR, where=where, message=message)

    # -- watches ----------------------------------------------------------------------------------

    def _sync_roots(self, roots: Sequence[str]) -> tuple[list[str], list[str]]:
        assert self.watcher is not None
        t0 = time.monotonic()
        added, removed, failed = self.watcher.sync(roots)
        for root, why in failed.items():
            self._error("watch", f"cannot watch {pathfd.display(root)}: {why}")
        event(
            "watch.sync",
            roots=[pathfd.display(r) for r in self.watcher.roots],
            added=len(added),
            removed=len(removed),
            watches=self.watcher.watch_count(),
            seconds=round(time.monotonic() - t0, 3),
        )
        if self.watcher.unwatched:
            self._report_unwatched()
        _release_memory()
        return added, removed

    def _on_watch_limit(self, path: str, why: str) -> None:
        # called from a watchdog thread at the first failure; the summary follows after sync
        self._limit_reported = False

    def _report_unwatched(self) -> None:
        if self._limit_reported or self.watcher is None:
            return
        self._limit_reported = True
        limit = max_user_watches()
        n = len(self.watcher.unwatched)
        suggestion = max((limit or 8192) * 4, self.watcher.watch_count() * 2, 524288)
        message = (
            f"inotify watch limit reached (fs.inotify.max_user_watches={limit}): {n} directories are not "
            f"watched and are rescanned every {self.config.files.rescan_unwatched:g}s instead; raise it with "
            f"`sysctl -w fs.inotify.max_user_watches={suggestion}` and persist it in /etc/sysctl.d/"
        )
        self.status.error("watch-limit", message)
        event(
            "watch.limit",
            logging.CRITICAL,
            message=message,
            sysctl="fs.inotify.max_user_watches",
            current=limit,
            suggested=suggestion,
            unwatched=n,
            first=[pathfd.display(p) for p in sorted(self.watcher.unwatched)[:5]],
        )

    def _on_overflow(self) -> None:
        self.status.bump("overflows")
        event("watch.overflow", logging.WARNING, message="inotify queue overflowed; rescanning every root")

    def _rescan_unwatched(self) -> None:
        if self.watcher is None:
            return
        if not self.watcher.unwatched:
            return
        # the limit may have been raised since: watch what can be watched now, rescan it once more
        # (files created while it was unwatched), and keep rescanning the rest
        rewatched = self.watcher.rewatch()
        if rewatched:
            event("watch.rewatched", directories=len(rewatched), unwatched=len(self.watcher.unwatched))
            if not self.watcher.unwatched:
                self._limit_reported = False  # all watched again: a later shortage is reported anew
        if self.watcher.unwatched:
            self._report_unwatched()
        for d in [*rewatched, *self.watcher.unwatched]:
            self.queue.put(Job("tree", d), now=True)

    def _do_reload(self) -> None:
        self.notifier.reloading()
        try:
            new = load_config(self.config.file).with_enforce(self.apply)
        except ConfigError as exc:
            self._error("reload", f"config not reloaded, keeping the running one: {exc}")
            self.notifier.ready(self.status.line())
            return
        self.config = new
        self.status.set(mode=new.mode)
        self.queue.debounce, self.queue.debounce_max = new.files.debounce, new.files.debounce_max
        self.actor.gateway_socket = new.gateway_socket
        self.actor.grace = new.procs.grace
        assert self.watcher is not None
        self.watcher.set_filters(new.files.exclude, self._skip_dirs())
        added, removed = self._sync_roots(existing_roots(new.files.watch, self._skip_dirs()))
        for root in added:  # a new tree: what is already there is checked too
            self.queue.put(Job("tree", root), now=True)
        self._seen.clear()  # a new policy may decide differently about what was seen
        self._seen_procs.clear()
        self.status.bump("reloads")
        self.notifier.ready(self.status.line())
        event("agent.reload", mode=new.mode, added=added, removed=removed)

    # -- files ------------------------------------------------------------------------------------

    def _full_scan(self, roots: Sequence[str]) -> None:
        t0 = time.monotonic()
        files = 0
        try:
            walker = self._walker()
            for root in roots:
                if self._stop.is_set():
                    return
                files += self._walk(walker, root)
        except Exception as exc:  # noqa: BLE001 - the daemon keeps running on events
            log.exception("full scan failed")
            self._error("full-scan", f"{type(exc).__name__}: {exc}")
        seconds = round(time.monotonic() - t0, 3)
        _release_memory()
        self.status.set(last_full_scan=time.time(), full_scan_seconds=seconds)
        event("scan.full", roots=len(roots), files=files, seconds=seconds)

    def _walker(self) -> Walker:
        return Walker(
            excludes=tuple(self.config.files.exclude), max_file_size=self.config.files.max_file_size
        )

    def _walk(self, walker: Walker, root: str) -> int:
        """Scan a tree with the safe walker; returns the number of files read."""
        before = walker.counters.files_scanned
        try:
            # Refuses a symlink anywhere on the way to the tree; the walk then starts from this fd and
            # never resolves `root` again, so a parent swapped for a symlink after this open (a user
            # racing a rescan) cannot lead a root walk into someone else's files.
            fd = pathfd.open_dir(root)
        except OSError:
            return 0
        try:
            for item in walker.walk_fd(fd, root):
                if self._stop.is_set():
                    break
                matches = self.detector.scan(item.data, item.path)
                if matches:
                    self._credentials(item.path, item.st_uid, matches)
        finally:
            os.close(fd)
        n = walker.counters.files_scanned - before
        self.status.bump("files_checked", n)
        return n

    def _file_worker(self) -> None:
        while not self._stop.is_set():
            job = self.queue.get(timeout=0.5)
            if job is None:
                continue
            try:
                if job.kind == "file":
                    self._check_file(job.path)
                else:
                    self._walk(self._walker(), job.path)
            except Exception as exc:  # noqa: BLE001 - one bad file never stops the worker
                log.exception("handling %s failed", pathfd.display(job.path))
                self._error("file", f"{pathfd.display(job.path)}: {type(exc).__name__}: {exc}")

    def _check_file(self, path: str) -> None:
        """Read one file named by an event, safely: no symlink anywhere, never blocking, size-capped."""
        self.status.set(last_file_event=time.time())
        try:
            leaf = pathfd.open_leaf(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                event("skip", logging.DEBUG, path=pathfd.display(path), reason="symlink")
            return
        with leaf:
            if not leaf.is_regular:
                return
            size = leaf.stat.st_size
            if size == 0 or size > self.config.files.max_file_size:
                return
            chunks, got = [], 0
            while got < size:
                chunk = os.read(leaf.fd, min(size - got, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            data = b"".join(chunks)
            uid = leaf.stat.st_uid
        self.status.bump("files_checked")
        if b"\0" in data[:BINARY_PROBE]:
            return
        matches = self.detector.scan(data, path)
        if matches:
            self._credentials(path, uid, matches)

    def _user(self, uid: int) -> str:
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self._users[uid] = name
        return name

    def _credentials(self, path: str, uid: int, matches: Sequence[Match]) -> None:
        """Decide and act on the credentials found in one file (one quarantine for the whole file)."""
        policy = self.config.policy
        user = self._user(uid)
        shown = pathfd.display(path)
        chosen: tuple[Match, Decision] | None = None
        fresh = False
        for m in matches:
            key = (path, m.rule_id, m.fingerprint)
            d = decide(
                policy, Subject("credential", user=user, path=path, rule=m.rule_id, fingerprint=m.fingerprint)
            )
            previous = self._seen.get(key)
            if previous is not None and not (d.acts and previous == "done"):
                continue  # reported (or refused) already: do not log it on every write
            fresh = True
            self.status.finding("credential")
            event(
                "finding",
                kind="credential",
                path=shown,
                user=user,
                rule=m.rule_id,
                severity=m.severity,
                line=m.line,
                fingerprint=m.fingerprint,
                preview=m.preview,
                action=d.action,
                applied=d.acts,
                why=d.why,
            )
            self._remember(key, "reported")
            if d.acts and d.action == "quarantine" and chosen is None:
                chosen = (m, d)
            elif not d.acts:
                self.status.action("credential", d.action, _passive(d))
        if chosen is None or not fresh:
            return
        m, d = chosen
        note = f"hoopctl agent: {len(matches)} finding(s)"
        outcome = self.actor.quarantine(
            path, m.rule_id, m.fingerprint, note, root_owned=self.config.files.quarantine_root_owned
        )
        self._record(
            "credential", "quarantine", outcome, path=shown, rule=m.rule_id, fingerprint=m.fingerprint
        )
        for mm in matches:
            self._remember((path, mm.rule_id, mm.fingerprint), outcome.result)

    def _remember(self, key: tuple[str, str, str], outcome: str) -> None:
        self._seen[key] = outcome
        self._seen.move_to_end(key)
        while len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)

    def _record(self, kind: str, action: str, outcome: Outcome, **fields: Any) -> None:
        self.status.action(kind, action, outcome.result)
        level = logging.INFO if outcome.result in ("done", "skipped") else logging.WARNING
        event(
            "action",
            level,
            kind=kind,
            action=action,
            result=outcome.result,
            detail=outcome.detail,
            ref=outcome.ref,
            **fields,
        )

    # -- processes --------------------------------------------------------------------------------

    def _process_loop(self) -> None:
        next_orphans = next_full = 0.0
        last_sig: object = None
        while not self._stop.is_set():
            started = time.monotonic()
            procs = self.config.procs
            with_orphans = started >= next_orphans
            # A full snapshot costs ~20 ms of CPU, the listener table a few hundredths of that. New
            # tunnels and relays open a listener, so an idle host pays for the cheap read, plus a
            # full pass every snapshot_interval (sshd-side forwards have no listener), the orphan
            # pass, and tunnels coming of age.
            sig = _listener_signature()
            due = self._tunnel_due is not None and started >= self._tunnel_due
            if with_orphans or due or started >= next_full or sig != last_sig:
                try:
                    self._process_pass(with_orphans)
                    last_sig = sig
                except Exception as exc:  # noqa: BLE001 - next pass tries again
                    log.exception("process pass failed")
                    self._error("processes", f"{type(exc).__name__}: {exc}")
                next_full = started + procs.snapshot_interval
                if with_orphans:
                    next_orphans = started + procs.orphan_interval
            self._stop.wait(max(0.05, procs.tunnel_interval - (time.monotonic() - started)))

    def _process_pass(self, with_orphans: bool) -> None:
        from hoopctl.detect.orphans import classify_orphans
        from hoopctl.detect.tunnels import classify_tunnels
        from hoopctl.host.procs import take_snapshot

        cfg = self.config
        own = os.getpid()
        snap = take_snapshot(environ=with_orphans, cgroups=with_orphans)
        self.status.set(last_proc_scan=time.time())
        self._tunnel_due = None
        by_pid: dict[int, list[Any]] = {}
        for f in classify_tunnels(snap, parse_targets(cfg.procs.protected)):
            if f.pid == own:
                continue
            proc = snap.procs.get(f.pid)
            key = ("tunnel", f.pid, proc.create_time if proc else 0, f.kind, f.listen, f.target)
            d = decide(cfg.policy, Subject("tunnel", user=f.user, target=f.target, age=f.age))
            if d.action == "wait":  # look again when it comes of age, even if nothing else changes
                when = time.monotonic() + max(0.0, cfg.policy.tunnel.min_age - f.age) + 0.5
                self._tunnel_due = when if self._tunnel_due is None else min(self._tunnel_due, when)
                if ("wait", *key) not in self._seen_procs:
                    self._seen_procs.add(("wait", *key))
                    event(
                        "tunnel.seen",
                        pid=f.pid,
                        user=f.user,
                        tunnel=f.kind,
                        listen=list(f.listen),
                        target=f.target,
                        age=f.age,
                        why=d.why,
                    )
                continue
            if key in self._seen_procs:
                continue
            self._seen_procs.add(key)
            self.status.finding("tunnel")
            event(
                "finding",
                kind="tunnel",
                pid=f.pid,
                user=f.user,
                tunnel=f.kind,
                listen=list(f.listen),
                target=f.target,
                protected=f.protected,
                age=f.age,
                command=f.command,
                action=d.action,
                applied=d.acts,
                why=d.why,
            )
            if d.acts:
                by_pid.setdefault(f.pid, []).append((f, d))
            else:
                self.status.action("tunnel", d.action, _passive(d))
        for pid, items in by_pid.items():
            adopt = [(f, d) for f, d in items if d.action == "adopt"]
            if adopt:
                f = adopt[0][0]
                outcome = self.actor.adopt(pid, f.listen, f.listen_port, f.target)
                self._record("tunnel", "adopt", outcome, pid=pid, listen=list(f.listen), target=f.target)
            else:
                outcome = self.actor.terminate(pid, "pid")
                self._record("tunnel", "terminate", outcome, pid=pid, target=items[0][0].target)
        if with_orphans:
            self._orphans(snap, own, classify_orphans)
        if len(self._seen_procs) > SEEN_MAX:
            self._seen_procs.clear()

    def _orphans(self, snap: Any, own: int, classify_orphans: Any) -> None:
        cfg = self.config
        found = classify_orphans(
            snap,
            min_age=cfg.policy.orphan.min_age,
            service_accounts=cfg.procs.service_accounts,
            ignore_pids=(own,),
        )
        for f in found:
            proc = snap.procs.get(f.pid)
            key = ("orphan", f.pid, proc.create_time if proc else 0)
            d = decide(cfg.policy, Subject("orphan", user=f.user, age=f.age))
            if d.action == "wait" or key in self._seen_procs:
                continue
            self._seen_procs.add(key)
            self.status.finding("orphan")
            event(
                "finding",
                kind="orphan",
                pid=f.pid,
                user=f.user,
                name=f.name,
                reasons=list(f.reasons),
                ci=f.ci,
                job=f.job,
                age=f.age,
                below=len(f.descendants),
                action=d.action,
                applied=d.acts,
                why=d.why,
            )
            if d.acts:
                outcome = self.actor.terminate(f.pid, "tree")
                self._record("orphan", "terminate", outcome, pid=f.pid, job=f.job)
            else:
                self.status.action("orphan", d.action, _passive(d))


def _release_memory() -> None:
    """After a big walk or watch sync: hand freed heap back to the OS, and take what stays out of the GC.

    glibc keeps freed heap otherwise (RSS stays high). And a full collection walks every tracked
    object: frozen objects (alive now: config, rules, caches) are never walked again, so a
    collection during event handling stays short. (The watch map itself holds only bytes and ints,
    which the collector does not track.)
    """
    gc.collect()
    gc.freeze()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def _listener_signature() -> object:
    """The host's TCP listeners as one comparable value; a fresh object (never equal) when unreadable."""
    try:
        return listeners()
    except OSError:
        return object()


def _passive(d: Decision) -> str:
    """How a decision that changes nothing is counted."""
    return {"allow": "allowed", "report": "reported"}.get(d.action, "dry-run")


def run_agent(config: AgentConfig, *, apply: bool = False) -> int:
    """Set up structured logging and run the agent until stopped; returns the exit status."""
    logs.setup(config.log_format)
    try:
        return Agent(config, apply=apply).run()
    except OSError as exc:  # e.g. no inotify instance left (EMFILE), a root that cannot be watched
        event("agent.failed", logging.CRITICAL, error=f"{exc.strerror or exc}")
        return 1
