"""Quarantine: move a file into a root-only vault with a manifest, and restore it byte for byte.

The vault is one directory (mode 0700, owned by the acting user, root in
production) holding ``journal.jsonl`` and one entry per quarantined file:
``<id>/blob`` (the file's data) and ``<id>/manifest.json`` (original path as
base64 bytes, owner, mode, times, size, sha256, why, journal id). Nothing is
ever deleted: quarantine moves, restore copies back and keeps the entry.

How a file is moved safely, as root, out of a tree its owner can write to:

1. The path is opened with ``pathfd.open_leaf`` (no symlink anywhere, never
   blocking); the checks below look at the *opened* inode, not at the name.
2. Refused: anything not a regular file, ``st_nlink > 1`` (another name of the
   inode may be ``/etc/shadow``: moving or emptying it would touch a file we
   must not), a root-owned file when the policy says user files only, a file
   that changes while it is hashed (streamed, never read whole).
3. Same filesystem: right before the rename the name must still be the opened
   inode; then ``renameat(parent_fd, name, entry_fd, "blob")``. A swap between
   that check and the rename cannot be closed from user space, and it is
   harmless: rename moves a directory entry, never follows a symlink, and
   after the move the vault's ``blob`` must be the inode we hashed (same
   st_dev/st_ino, still one link, same size and mtime). If it is not, it is
   renamed back where it came from, so the vault never keeps a file that was
   not the one inspected, and nothing is read or written through the swapped
   name.
4. Across filesystems: the data is copied from the already-opened descriptor
   into the vault, fsynced and hashed again, and the original name is removed
   only if it still refers to the opened inode. The window between that check
   and ``unlinkat`` can only make us remove a directory entry that the
   directory's writer put there, which they could remove themselves; no data
   of another inode is lost (its other names stay).

Before anything moves, the journal's ``started`` record holds the complete
manifest, so a crash between the move and writing ``manifest.json`` loses
nothing: the manifest is rebuilt from the journal when it is next read.

Left open on purpose: a process of the owner that already holds the file open
can still write to it after the move (its data stays in the vault; restore then
refuses because the sha256 differs, and the blob is kept); a file on a FUSE
mount that its owner serves could stall a read.

Restore creates the file with ``O_TMPFILE`` inside the safely opened original
parent directory, writes and verifies the bytes, sets owner, mode and times
on the descriptor, and links it in with ``linkat``, which fails rather than
overwrite: the file appears complete or not at all, and nothing is created
outside that directory.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import grp
import hashlib
import json
import logging
import os
import pwd
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NoReturn

from hoopctl.act.journal import Journal, new_action_id, now_iso
from hoopctl.host import pathfd
from hoopctl.host.pathfd import PathLike, UnsafePath, display, lstat_at, same_inode

log = logging.getLogger(__name__)

DEFAULT_VAULT = "/var/lib/hoopctl/quarantine"
MANIFEST = b"manifest.json"
BLOB = b"blob"
_CHUNK = 1 << 20
_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")

# Tests pass a hook to act at a named stage (e.g. swap the file for a symlink
# right before the rename); production code passes none.
Hook = Callable[[str], None]


class Refused(Exception):
    """The action was not done (or was undone), for the reason in the message; nothing was lost."""


class VaultError(Exception):
    """The vault itself is unusable (wrong owner or mode, not a directory, unknown entry)."""


@dataclass(frozen=True)
class QuarantinePolicy:
    """What may be quarantined. By default only files owned by someone other than root."""

    refuse_root_owned: bool = True
    owners: frozenset[int] | None = None  # when set, only files owned by these uids


@dataclass(frozen=True)
class Reason:
    """Why a file is quarantined: the finding's rule and fingerprint, never the secret."""

    rule_id: str = ""
    fingerprint: str = ""
    note: str = ""


@dataclass(frozen=True)
class FileFacts:
    """What was observed of an opened file: identity, owner, mode, times, size, content hash."""

    path: bytes
    dev: int
    ino: int
    uid: int
    gid: int
    mode: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    sha256: str

    def brief(self) -> dict[str, Any]:
        return {
            "path": display(self.path),
            "path_b64": _b64(self.path),
            "dev": self.dev,
            "ino": self.ino,
            "uid": self.uid,
            "size": self.size,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class QuarantinePlan:
    """The outcome of a dry run: the facts of the file, or why it would be refused."""

    path: bytes
    facts: FileFacts | None
    refusal: str | None
    action_id: str | None = None  # set when the plan was journaled (Vault.plan)

    @property
    def ok(self) -> bool:
        return self.refusal is None


@dataclass(frozen=True)
class Restoration:
    """One restore of a vault entry: where to and when."""

    at: str
    path: bytes
    journal_id: str


@dataclass(frozen=True)
class Manifest:
    """The record of one quarantined file, stored beside its blob."""

    id: str
    path: bytes
    uid: int
    gid: int
    user: str | None
    group: str | None
    mode: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    sha256: str
    dev: int
    ino: int
    method: str
    quarantined_at: str
    actor_uid: int
    reason: Reason
    journal_id: str
    restores: tuple[Restoration, ...] = field(default_factory=tuple)

    @property
    def restored(self) -> bool:
        return bool(self.restores)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = display(self.path)
        out["path_b64"] = _b64(self.path)
        out["mode_octal"] = f"{stat.S_IMODE(self.mode):04o}"
        out["restores"] = [
            {"at": r.at, "path": display(r.path), "path_b64": _b64(r.path), "journal_id": r.journal_id}
            for r in self.restores
        ]
        out["version"] = 1
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Manifest:
        restores = tuple(
            Restoration(at=r["at"], path=base64.b64decode(r["path_b64"]), journal_id=r["journal_id"])
            for r in obj.get("restores", ())
        )
        fields = {k: obj[k] for k in cls.__dataclass_fields__ if k not in ("path", "reason", "restores")}
        return cls(
            **fields,
            path=base64.b64decode(obj["path_b64"]),
            reason=Reason(**obj.get("reason", {})),
            restores=restores,
        )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _user(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _group(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def _call(hook: Hook | None, stage: str) -> None:
    if hook is not None:
        hook(stage)


def _unchanged(a: os.stat_result, b: os.stat_result) -> bool:
    """Same inode, same size and mtime: the data was not rewritten in between."""
    return same_inode(a, b) and (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns)


def policy_refusal(st: os.stat_result, policy: QuarantinePolicy) -> str | None:
    """Why the policy forbids touching a file with this fstat, or None."""
    if not stat.S_ISREG(st.st_mode):
        return f"not a regular file ({pathfd.kind(st)})"
    if st.st_nlink != 1:
        return (
            f"has {st.st_nlink} hard links: another name may be a file that must not be touched "
            "(e.g. /etc/shadow)"
        )
    if policy.refuse_root_owned and st.st_uid == 0:
        return "owned by root (policy: user files only)"
    if policy.owners is not None and st.st_uid not in policy.owners:
        return f"owner uid {st.st_uid} is not in the policy's owners"
    return None


def _hash_fd(fd: int, sink: int | None = None) -> str:
    """sha256 of a file streamed with preadv from offset 0, optionally copying it to ``sink``.

    One reused buffer: memory stays flat whatever the file's size."""
    digest = hashlib.sha256()
    buf = bytearray(_CHUNK)
    whole = memoryview(buf)
    offset = 0
    while True:
        n = os.preadv(fd, [buf], offset)
        if not n:
            return digest.hexdigest()
        chunk = whole[:n]
        digest.update(chunk)
        if sink is not None:
            view = chunk
            while view:
                view = view[os.write(sink, view) :]
        offset += n


def _inspect(leaf: pathfd.Leaf, policy: QuarantinePolicy) -> FileFacts:
    refusal = policy_refusal(leaf.stat, policy)
    if refusal:
        raise Refused(refusal)
    sha = _hash_fd(leaf.fd)
    after = os.fstat(leaf.fd)
    if not _unchanged(leaf.stat, after) or after.st_ctime_ns != leaf.stat.st_ctime_ns:
        raise Refused("changed while it was being hashed")
    st = leaf.stat
    return FileFacts(
        path=leaf.path,
        dev=st.st_dev,
        ino=st.st_ino,
        uid=st.st_uid,
        gid=st.st_gid,
        mode=st.st_mode,
        size=st.st_size,
        atime_ns=st.st_atime_ns,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        sha256=sha,
    )


def _manifest(entry_id: str, facts: FileFacts, reason: Reason) -> Manifest:
    return Manifest(
        id=entry_id,
        path=facts.path,
        uid=facts.uid,
        gid=facts.gid,
        user=_user(facts.uid),
        group=_group(facts.gid),
        mode=facts.mode,
        size=facts.size,
        atime_ns=facts.atime_ns,
        mtime_ns=facts.mtime_ns,
        ctime_ns=facts.ctime_ns,
        sha256=facts.sha256,
        dev=facts.dev,
        ino=facts.ino,
        method="rename",
        quarantined_at=now_iso(),
        actor_uid=os.geteuid(),
        reason=reason,
        journal_id=entry_id,
    )


def plan_quarantine(path: PathLike, policy: QuarantinePolicy | None = None) -> QuarantinePlan:
    """Dry run: open and hash the file read-only and say whether it would be quarantined."""
    raw = pathfd.to_bytes(path)
    try:
        with pathfd.open_leaf(raw) as leaf:
            return QuarantinePlan(raw, _inspect(leaf, policy or QuarantinePolicy()), None)
    except (Refused, UnsafePath) as exc:
        return QuarantinePlan(raw, None, str(exc))


class Vault:
    """A root-only directory of quarantined files, with its journal."""

    def __init__(self, root: PathLike = DEFAULT_VAULT, *, create: bool = True) -> None:
        self.root = pathfd.to_bytes(root)
        try:
            fd = pathfd.ensure_dir(self.root, 0o700) if create else pathfd.open_dir(self.root)
        except UnsafePath as exc:
            raise VaultError(f"vault: {exc.strerror}") from None
        except OSError as exc:
            raise VaultError(f"vault {display(self.root)}: {exc.strerror or exc}") from None
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            os.close(fd)
            raise VaultError(
                f"vault {display(self.root)} must be owned by uid {os.geteuid()} with mode 0700 "
                f"(it is uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})"
            )
        self.fd = fd
        try:
            self.journal = Journal(fd)
        except OSError as exc:
            os.close(fd)
            raise VaultError(f"vault {display(self.root)}: journal: {exc.strerror or exc}") from None

    def close(self) -> None:
        self.journal.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------

    def ids(self) -> list[str]:
        """Entry ids, oldest first."""
        with os.scandir(self.fd) as it:
            return sorted(e.name for e in it if _ID_RE.match(e.name) and e.is_dir(follow_symlinks=False))

    def get(self, entry_id: str) -> Manifest:
        """The manifest of one entry (a unique id prefix is accepted)."""
        entry_id = self._resolve_id(entry_id)
        with self._entry(entry_id) as entry_fd:
            return self._read_manifest(entry_fd, entry_id)

    def manifests(self) -> Iterator[Manifest]:
        """Every readable manifest; an entry without one (crash mid-quarantine) is logged."""
        for entry_id in self.ids():
            try:
                yield self.get(entry_id)
            except VaultError as exc:
                log.warning("%s", exc)

    def _resolve_id(self, entry_id: str) -> str:
        if _ID_RE.match(entry_id):
            return entry_id
        if not re.fullmatch(r"[0-9TZ-]*[0-9a-f]*", entry_id or "-") or len(entry_id) < 4:
            raise VaultError(f"not a quarantine id: {entry_id!r}")
        hits = [i for i in self.ids() if i.startswith(entry_id) or i.endswith(entry_id)]
        if len(hits) != 1:
            raise VaultError(f"{'no' if not hits else 'more than one'} quarantine entry matches {entry_id!r}")
        return hits[0]

    @contextlib.contextmanager
    def _entry(self, entry_id: str) -> Iterator[int]:
        if not _ID_RE.match(entry_id):
            raise VaultError(f"not a quarantine id: {entry_id!r}")
        try:
            fd = os.open(
                entry_id, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd
            )
        except FileNotFoundError:
            raise VaultError(f"no quarantine entry {entry_id}") from None
        try:
            yield fd
        finally:
            os.close(fd)

    def _read_manifest(self, entry_fd: int, entry_id: str) -> Manifest:
        try:
            fd = os.open(MANIFEST, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=entry_fd)
        except FileNotFoundError:
            return self._recover_manifest(entry_fd, entry_id, "has no manifest")
        with os.fdopen(fd, "rb") as fh:
            try:
                return Manifest.from_json(json.load(fh))
            except (ValueError, KeyError, TypeError) as exc:
                return self._recover_manifest(entry_fd, entry_id, f"has an unreadable manifest ({exc})")

    def _recover_manifest(self, entry_fd: int, entry_id: str, problem: str) -> Manifest:
        """Rebuild a manifest lost in a crash from the journal's ``started`` record, and write it back."""
        if lstat_at(entry_fd, BLOB) is None:
            raise VaultError(
                f"quarantine entry {entry_id} {problem} and no data (interrupted before the move)"
            )
        for rec in self.journal.history(entry_id):
            if rec.state == "started" and "manifest" in rec.details:
                manifest = Manifest.from_json(rec.details["manifest"])
                log.warning("quarantine entry %s %s: rebuilt from the journal", entry_id, problem)
                with contextlib.suppress(OSError):
                    self._write_manifest(entry_fd, manifest)
                return manifest
        raise VaultError(f"quarantine entry {entry_id} {problem}, and the journal has no record of it")

    def _write_manifest(self, entry_fd: int, manifest: Manifest, *, fresh: bool = False) -> None:
        """Write manifest.json durably: directly into a new entry, else through a temp file and rename."""
        data = json.dumps(manifest.to_json(), sort_keys=True, indent=1).encode("ascii") + b"\n"
        name = MANIFEST if fresh else MANIFEST + b".tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_EXCL if fresh else os.O_TRUNC)
        fd = os.open(name, flags, 0o600, dir_fd=entry_fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if not fresh:
            os.rename(name, MANIFEST, src_dir_fd=entry_fd, dst_dir_fd=entry_fd)
            pathfd.fsync_dir(entry_fd)

    # -- plan, apply, undo (the offboarding sweep's verbs) ---------------------

    def plan(self, path: PathLike, reason: Reason, policy: QuarantinePolicy | None = None) -> QuarantinePlan:
        """A dry run that is journaled as ``planned`` when the file may be quarantined."""
        plan = plan_quarantine(path, policy)
        if not plan.ok or plan.facts is None:
            return plan
        details = {"rule_id": reason.rule_id, "fingerprint": reason.fingerprint}
        return replace(plan, action_id=self.journal.plan("quarantine", plan.facts.brief(), details))

    def apply(self, plan: QuarantinePlan, reason: Reason, policy: QuarantinePolicy | None = None) -> Manifest:
        """Carry out a plan, only if the file is still the one planned (same inode, same sha256)."""
        if not plan.ok or plan.facts is None:
            raise Refused(f"{display(plan.path)}: {plan.refusal}")
        return self.quarantine(plan.path, reason, policy, expect=plan.facts, action_id=plan.action_id)

    def undo(self, entry_id: str) -> Manifest:
        """Undo a quarantine: restore the entry to where it was (never overwriting)."""
        return self.restore(entry_id)

    # -- quarantine ----------------------------------------------------------

    def quarantine(
        self,
        path: PathLike,
        reason: Reason,
        policy: QuarantinePolicy | None = None,
        *,
        expect: FileFacts | None = None,
        action_id: str | None = None,
        hook: Hook | None = None,
    ) -> Manifest:
        """Move one file into the vault; raises ``Refused`` (nothing lost, journaled) when it may not.

        ``expect`` (from a plan) makes the move conditional on the file being the
        same inode with the same content as when it was planned; ``action_id``
        continues a journaled plan (and becomes the vault entry id).
        """
        if action_id is not None and not _ID_RE.match(action_id):
            raise ValueError(f"not an action id: {action_id!r}")
        policy = policy or QuarantinePolicy()
        raw = pathfd.to_bytes(path)
        try:
            leaf = pathfd.open_leaf(raw)
        except UnsafePath as exc:
            self._refused(raw, str(exc), action_id)
        with leaf:
            _call(hook, "opened")
            try:
                facts = _inspect(leaf, policy)
                if expect is not None and (expect.dev, expect.ino, expect.sha256) != (
                    facts.dev,
                    facts.ino,
                    facts.sha256,
                ):
                    raise Refused("changed since it was planned")
            except Refused as exc:
                self._refused(raw, str(exc), action_id)
            _call(hook, "hashed")
            entry_id = action_id or new_action_id()
            manifest = _manifest(entry_id, facts, reason)
            # The whole manifest goes into the journal before anything moves: should we crash
            # between the move and writing manifest.json, the journal alone says where it belongs.
            self.journal.start("quarantine", facts.brief(), {"manifest": manifest.to_json()}, entry_id)
            try:
                manifest = self._move_in(leaf, facts, manifest, hook)
            except Refused as exc:
                self.journal.finish(entry_id, "quarantine", "failed", {"reason": str(exc)})
                raise Refused(f"{display(raw)}: {exc}") from None
            except OSError as exc:  # e.g. moved away under us, immutable, read-only filesystem
                why = f"{exc.strerror or exc}; nothing moved"
                self.journal.finish(entry_id, "quarantine", "failed", {"reason": why})
                raise Refused(f"{display(raw)}: {why}") from None
            except BaseException as exc:
                self.journal.finish(entry_id, "quarantine", "failed", {"error": repr(exc)})
                raise
            self.journal.finish(
                entry_id, "quarantine", "done", {"method": manifest.method, "sha256": facts.sha256}
            )
            log.info("quarantined %s as %s", display(raw), entry_id)
            return manifest

    def _refused(self, raw: bytes, why: str, action_id: str | None = None) -> NoReturn:
        self.journal.write(
            action_id or new_action_id(),
            "quarantine",
            "refused",
            {"path": display(raw), "path_b64": _b64(raw)},
            {"reason": why},
        )
        raise Refused(f"{display(raw)}: {why}")

    def _move_in(
        self, leaf: pathfd.Leaf, facts: FileFacts, manifest: Manifest, hook: Hook | None
    ) -> Manifest:
        entry_id = manifest.id
        os.mkdir(entry_id, 0o700, dir_fd=self.fd)
        entry_fd = os.open(
            entry_id, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd
        )
        try:
            copying = os.fstat(entry_fd).st_dev != facts.dev
            try:
                if not copying:
                    try:
                        self._rename_in(leaf, entry_fd, hook)
                    except OSError as exc:
                        if exc.errno != errno.EXDEV:  # e.g. two bind mounts of one filesystem
                            raise
                        copying = True
                if copying:
                    self._copy_in(leaf, facts, entry_fd, hook)
                manifest = replace(manifest, method="copy" if copying else "rename")
                self._write_manifest(entry_fd, manifest, fresh=True)
            except BaseException:
                self._discard_entry(entry_fd, entry_id, own_copy=copying)
                raise
            # One fsync of a directory commits the filesystem journal holding the rename, the mkdir
            # and the manifest's name (ext4, xfs); the file's own data was fsynced on its own.
            pathfd.fsync_dir(entry_fd)
            return manifest
        finally:
            os.close(entry_fd)

    def _rename_in(self, leaf: pathfd.Leaf, entry_fd: int, hook: Hook | None) -> None:
        if not leaf.name_still_here():
            raise Refused("replaced after it was opened (the name no longer refers to the inspected file)")
        if not _unchanged(leaf.stat, os.fstat(leaf.fd)):
            raise Refused("changed after it was hashed")
        _call(hook, "before_rename")
        os.rename(leaf.name, BLOB, src_dir_fd=leaf.parent_fd, dst_dir_fd=entry_fd)
        moved = lstat_at(entry_fd, BLOB)
        now = os.fstat(leaf.fd)
        if same_inode(moved, leaf.stat) and _unchanged(leaf.stat, now) and now.st_nlink == 1:
            return
        # Whatever was renamed is not the file we inspected (or it changed): put it back untouched.
        try:
            pathfd.rename_noreplace(entry_fd, BLOB, leaf.parent_fd, leaf.name)
        except OSError as exc:
            raise Refused(
                f"swapped during the move and could not be moved back ({exc.strerror}); "
                "it is kept in the vault entry"
            ) from None
        raise Refused("swapped or changed during the move; moved back untouched")

    def _copy_in(self, leaf: pathfd.Leaf, facts: FileFacts, entry_fd: int, hook: Hook | None) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        blob = os.open(BLOB, flags, 0o600, dir_fd=entry_fd)
        try:
            copied = _hash_fd(leaf.fd, sink=blob)
            os.fsync(blob)
        finally:
            os.close(blob)
        if copied != facts.sha256 or not _unchanged(leaf.stat, os.fstat(leaf.fd)):
            raise Refused("changed while it was copied into the vault")
        check = os.open(BLOB, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=entry_fd)
        try:
            if _hash_fd(check) != facts.sha256:
                raise Refused("the vault copy does not verify")
        finally:
            os.close(check)
        _call(hook, "before_unlink")
        if not leaf.name_still_here():
            raise Refused("replaced before the original could be removed; left in place")
        os.unlink(leaf.name, dir_fd=leaf.parent_fd)
        if os.fstat(leaf.fd).st_nlink != 0:
            log.warning("%s: a new hard link appeared during quarantine", display(leaf.path))

    def _discard_entry(self, entry_fd: int, entry_id: str, *, own_copy: bool) -> None:
        """Undo an entry we created: our manifest, and the blob only if it is our own partial copy.

        A renamed-in file that could not be renamed back is user data: the whole
        entry is then kept (and the journal says so).
        """
        if lstat_at(entry_fd, BLOB) is not None:
            if not own_copy:
                log.error("vault entry %s keeps a file that could not be moved back", entry_id)
                return
            os.unlink(BLOB, dir_fd=entry_fd)
        for name in (MANIFEST, MANIFEST + b".tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=entry_fd)
        with contextlib.suppress(OSError):
            os.rmdir(entry_id, dir_fd=self.fd)

    # -- restore -------------------------------------------------------------

    def restore(self, entry_id: str, to: PathLike | None = None, *, hook: Hook | None = None) -> Manifest:
        """Copy an entry's data back (to its original path, or ``to``) with owner, mode and times.

        Refuses to overwrite anything, creates nothing outside the target's
        parent directory (which must exist and resolve with no symlink), and
        keeps the vault entry, marked restored.
        """
        entry_id = self._resolve_id(entry_id)
        with self._entry(entry_id) as entry_fd:
            manifest = self._read_manifest(entry_fd, entry_id)
            target = pathfd.to_bytes(to) if to is not None else manifest.path
            try:
                parent_fd, name = pathfd.open_parent(target)
            except UnsafePath as exc:
                raise Refused(
                    f"cannot restore to {display(target)}: parent directory: {exc.strerror}"
                ) from None
            try:
                if lstat_at(parent_fd, name) is not None:
                    raise Refused(f"{display(target)} exists; will not overwrite (use --to PATH)")
                action_id = self.journal.start(
                    "restore", {"id": entry_id, "path": display(target), "path_b64": _b64(target)}
                )
                try:
                    self._copy_out(entry_fd, manifest, parent_fd, name, hook)
                except Refused as exc:
                    self.journal.finish(action_id, "restore", "failed", {"reason": str(exc)})
                    raise
                except OSError as exc:  # disk full, read-only filesystem, quota: nothing was linked in
                    why = f"cannot restore to {display(target)}: {exc.strerror or exc}"
                    self.journal.finish(action_id, "restore", "failed", {"reason": why})
                    raise Refused(why) from None
                except BaseException as exc:
                    self.journal.finish(action_id, "restore", "failed", {"error": repr(exc)})
                    raise
                done = replace(
                    manifest, restores=(*manifest.restores, Restoration(now_iso(), target, action_id))
                )
                self._write_manifest(entry_fd, done)
                self.journal.finish(action_id, "restore", "done", {"sha256": manifest.sha256})
                log.info("restored %s to %s", entry_id, display(target))
                return done
            finally:
                os.close(parent_fd)

    def _copy_out(self, entry_fd: int, m: Manifest, parent_fd: int, name: bytes, hook: Hook | None) -> None:
        blob = os.open(BLOB, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=entry_fd)
        try:
            if not stat.S_ISREG(os.fstat(blob).st_mode):
                raise Refused(f"vault entry {m.id}: blob is not a regular file")
            out, temp_name = _new_unnamed(parent_fd)
            try:
                if _hash_fd(blob, sink=out) != m.sha256:
                    raise Refused(
                        f"vault entry {m.id}: data does not match the manifest's sha256; not restored"
                    )
                os.fchown(out, m.uid, m.gid)
                os.fchmod(out, stat.S_IMODE(m.mode))  # after chown, which clears set-id bits
                os.utime(out, ns=(m.atime_ns, m.mtime_ns))
                os.fsync(out)
                _call(hook, "before_link")
                try:
                    if temp_name is None:
                        os.link(f"/proc/self/fd/{out}", name, dst_dir_fd=parent_fd, follow_symlinks=True)
                    else:
                        os.link(
                            temp_name, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd, follow_symlinks=False
                        )
                except FileExistsError:
                    raise Refused(f"{display(name)} appeared meanwhile; will not overwrite") from None
                if not same_inode(lstat_at(parent_fd, name), os.fstat(out)):
                    raise Refused(f"{display(name)} was replaced right after restore; check it")
                pathfd.fsync_dir(parent_fd)
            finally:
                os.close(out)
                if temp_name is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(temp_name, dir_fd=parent_fd)
        finally:
            os.close(blob)


def _new_unnamed(parent_fd: int) -> tuple[int, bytes | None]:
    """A new, empty, root-only file in a directory: unnamed (``O_TMPFILE``) where the filesystem allows.

    Returns (fd, temporary name or None). The fallback name is created with O_EXCL.
    """
    try:
        return os.open(b".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=parent_fd), None
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    temp = f".hoopctl-restore-{new_action_id()}".encode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(temp, flags, 0o600, dir_fd=parent_fd), temp
