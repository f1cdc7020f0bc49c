"""Scan files for credentials: the safe walker feeds each file's bytes to the detector.

`scan_paths` is the one entry point (the CLI, the demo, the agent and the sweep call it). With
`jobs > 1` it forks workers that each walk the same trees and read a disjoint hash share of the
files (see `Walker.part`), so the pure-Python detector runs on every core without shipping file
contents between processes; each worker sends back only its findings and counters.
"""

from __future__ import annotations

import logging
import mmap
import os
import pickle
import pwd
import stat
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from hoopctl.detect.exposure import adjust_severity
from hoopctl.host.safefs import (
    DEFAULT_EXCLUDES,
    DEFAULT_MAX_FILE_SIZE,
    WalkCounters,
    Walker,
    WalkError,
    printable,
)

if TYPE_CHECKING:
    from hoopctl.detect import Detector

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_EXCLUDES",
    "DEFAULT_MAX_FILE_SIZE",
    "Finding",
    "ScanResult",
    "ScanStats",
    "WalkError",
    "scan_paths",
]

PROGRESS_EVERY = 256  # files between progress updates
_SLOT = struct.Struct("qq")  # files, bytes: one slot per worker in shared memory


@dataclass(frozen=True, slots=True)
class Finding:
    """One credential in one file. Holds a redacted preview and a fingerprint, never the secret."""

    path: str  # fsdecoded (surrogateescape); print it with `printable`
    line: int
    rule: str
    type: str
    severity: str
    owner: str
    mode: str  # permission bits in octal, e.g. "0644"
    fingerprint: str
    preview: str
    exposure: tuple[str, ...] = ()  # why severity was raised: world-readable, shared-dir, ...

    def to_json(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in self.__slots__}  # asdict() recurses: slower
        d["path"] = printable(self.path)
        d["exposure"] = list(self.exposure)
        return d


@dataclass(frozen=True, slots=True)
class ScanStats:
    files_scanned: int
    bytes_scanned: int
    dirs_scanned: int
    skipped_binary: int
    skipped_large: int
    skipped_special: int
    unreadable: int
    symlinks_skipped: int
    excluded: int
    other_fs_skipped: int
    errors: int
    seconds: float
    mb_per_s: float
    jobs: int = 1


@dataclass(frozen=True, slots=True)
class ScanResult:
    findings: list[Finding]
    stats: ScanStats

    def to_json(self) -> dict[str, Any]:
        return {"findings": [f.to_json() for f in self.findings], "stats": asdict(self.stats)}


ProgressFn = Callable[[int, int], None]  # (files scanned so far, bytes scanned so far)


def default_jobs() -> int:
    """Workers for a scan: the CPUs this process may run on, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def check_paths(paths: Sequence[str]) -> None:
    """Fail before any work if a starting path is missing: one error naming it."""
    for p in paths:
        try:
            os.lstat(p)
        except FileNotFoundError:
            raise WalkError(f"{printable(p)}: no such file or directory") from None
        except OSError as exc:
            raise WalkError(f"{printable(p)}: {exc.strerror}") from None


def _scan_share(
    paths: Sequence[str],
    walker: Walker,
    detector: Detector,
    tick: Callable[[WalkCounters], None] | None,
) -> list[Finding]:
    findings: list[Finding] = []
    owners: dict[int, str] = {}
    scan = detector.scan
    c = walker.counters
    n = 0
    for root in paths:
        for item in walker.walk(root):
            n += 1
            if tick is not None and n % PROGRESS_EVERY == 0:
                tick(c)
            matches = scan(item.data, item.path)
            if not matches:
                continue
            owner = owners.get(item.st_uid)
            if owner is None:
                try:
                    owner = pwd.getpwuid(item.st_uid).pw_name
                except KeyError:
                    owner = str(item.st_uid)
                owners[item.st_uid] = owner
            mode = f"{stat.S_IMODE(item.st_mode):04o}"
            for m in matches:
                severity, reasons = adjust_severity(m.severity, item.st_mode, item.shared_dir)
                findings.append(
                    Finding(
                        item.path,
                        m.line,
                        m.rule_id,
                        m.type,
                        severity,
                        owner,
                        mode,
                        m.fingerprint,
                        m.preview,
                        reasons,
                    )
                )
    if tick is not None:
        tick(c)
    return findings


def scan_paths(
    paths: Sequence[str | os.PathLike[str]],
    *,
    excludes: Sequence[str] = DEFAULT_EXCLUDES,
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    detector: Detector | None = None,
    one_file_system: bool = False,
    jobs: int = 1,
    progress: ProgressFn | None = None,
) -> ScanResult:
    """Scan files and trees for credentials; raises WalkError if a starting path does not exist."""
    started = time.perf_counter()
    roots = [os.fspath(p) for p in paths]
    check_paths(roots)
    if detector is None:
        from hoopctl.detect import Detector

        detector = Detector.default()
    jobs = max(1, jobs)
    if jobs > 1 and not hasattr(os, "fork"):
        jobs = 1

    shared = mmap.mmap(-1, _SLOT.size * jobs) if (progress is not None and jobs > 1) else None

    def make_tick(k: int) -> Callable[[WalkCounters], None] | None:
        if progress is None:
            return None
        if shared is None:
            return lambda c: progress(c.files_scanned, c.bytes_scanned)

        def tick(c: WalkCounters) -> None:
            _SLOT.pack_into(shared, k * _SLOT.size, c.files_scanned, c.bytes_scanned)
            if k == 0:
                files = sum(_SLOT.unpack_from(shared, i * _SLOT.size)[0] for i in range(jobs))
                nbytes = sum(_SLOT.unpack_from(shared, i * _SLOT.size)[1] for i in range(jobs))
                progress(files, nbytes)

        return tick

    def walker(k: int) -> Walker:
        return Walker(
            excludes=tuple(excludes),
            max_file_size=max_file_size,
            one_file_system=one_file_system,
            part=(k, jobs),
        )

    children: list[tuple[int, int]] = []  # (pid, read end of its pipe)
    try:
        for k in range(1, jobs):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # worker: scan share k, send the result, never return into the caller
                code = 0
                try:
                    os.close(r)
                    wk = walker(k)
                    found = _scan_share(roots, wk, detector, make_tick(k))
                    payload = pickle.dumps(("ok", found, wk.counters), protocol=pickle.HIGHEST_PROTOCOL)
                except BaseException as exc:  # noqa: BLE001 - report any failure to the parent
                    payload = pickle.dumps(("error", f"{type(exc).__name__}: {exc}", None))
                    code = 1
                try:
                    with os.fdopen(w, "wb") as fh:
                        fh.write(payload)
                finally:
                    os._exit(code)
            os.close(w)
            children.append((pid, r))

        own = walker(0)
        findings = _scan_share(roots, own, detector, make_tick(0))
        counters = own.counters
        failure = None
        for pid, r in children:
            with os.fdopen(r, "rb") as fh:
                raw = fh.read()
            os.waitpid(pid, 0)
            try:
                status, found, theirs = pickle.loads(raw)  # noqa: S301 - our own forked child
            except Exception as exc:  # noqa: BLE001
                status, found, theirs = "error", f"worker died: {exc}", None
            if status != "ok":
                failure = found
                continue
            findings.extend(found)
            counters.add(theirs)
        children.clear()
        if failure is not None:
            raise RuntimeError(f"scan worker failed: {failure}")
    finally:
        for pid, r in children:  # interrupted: stop the workers we started
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass
            try:
                os.close(r)
            except OSError:
                pass
        if shared is not None:
            shared.close()

    # Overlapping starting paths (/srv and /srv/app) must not report a finding twice.
    findings = sorted(set(findings), key=lambda f: (f.path, f.line, f.rule, f.fingerprint))
    seconds = time.perf_counter() - started
    c = counters
    stats = ScanStats(
        files_scanned=c.files_scanned,
        bytes_scanned=c.bytes_scanned,
        dirs_scanned=c.dirs_scanned,
        skipped_binary=c.skipped_binary,
        skipped_large=c.skipped_large,
        skipped_special=c.skipped_special,
        unreadable=c.unreadable,
        symlinks_skipped=c.symlinks_skipped,
        excluded=c.excluded,
        other_fs_skipped=c.other_fs_skipped,
        errors=c.errors,
        seconds=round(seconds, 4),
        mb_per_s=round(c.bytes_scanned / 1e6 / seconds, 2) if seconds > 0 else 0.0,
        jobs=jobs,
    )
    log.info("scanned %d files, %d bytes in %.2fs", c.files_scanned, c.bytes_scanned, seconds)
    return ScanResult(findings, stats)
