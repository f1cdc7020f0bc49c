"""A throwaway PostgreSQL cluster for the demo, the tests and the benchmarks.

Uses the system's server binaries (Debian's postgresql package) and falls back to
the `pgserver` wheel's. As root, initdb refuses to run, so the cluster is owned by
the `postgres` system user (created by the package) and the data directory lives
in a fresh temporary directory that user can reach.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "postgres"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for found in candidates:
        if Path(found, "initdb").exists():
            return Path(found)
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip()
        if Path(bindir, "initdb").exists():
            return Path(bindir)
    try:
        import pgserver  # type: ignore[import-not-found]

        bindir = Path(pgserver.__file__).parent / "pginstall" / "bin"
        if (bindir / "initdb").exists():
            return bindir
    except ImportError:
        pass
    raise PostgresUnavailable(
        "no PostgreSQL server binaries found (apt-get install postgresql, or pip install pgserver)"
    )


def _version_key(path: str) -> int:
    try:
        return int(Path(path).parent.name)
    except ValueError:
        return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalPostgres:
    """A running cluster: password auth over TCP (scram-sha-256), trust on its unix socket."""

    root: Path
    port: int
    password: str
    bindir: Path
    run_as: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def sockdir(self) -> Path:
        return self.root / "sock"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def dsn(self, dbname: str = "postgres", *, via_socket: bool = True) -> str:
        if via_socket:
            return f"host={self.sockdir} port={self.port} user={SUPERUSER} dbname={dbname}"
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} password={self.password} dbname={dbname}"

    def bin(self, name: str) -> str:
        found = self.bindir / name
        return str(found) if found.exists() else (shutil.which(name) or name)

    def _cmd(self, argv: list[str]) -> list[str]:
        if self.run_as:
            return ["runuser", "-u", self.run_as, "--", *argv]
        return argv

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Runs SQL over the unix socket as the superuser; returns unaligned output."""
        out = subprocess.run(
            [self.bin("psql"), "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(dbname), "-c", sql],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()

    @classmethod
    def start(cls, root: Path | None = None, *, password: str | None = None) -> LocalPostgres:
        bindir = find_bindir()
        root = Path(root or tempfile.mkdtemp(prefix="hoopctl-pg-"))
        run_as = None
        if os.geteuid() == 0:
            run_as = SUPERUSER
            try:
                pw = pwd.getpwnam(run_as)
            except KeyError as exc:
                raise PostgresUnavailable("running as root needs a 'postgres' system user") from exc
            root.mkdir(parents=True, exist_ok=True)
            os.chown(root, pw.pw_uid, pw.pw_gid)
            os.chmod(root, 0o700)
            # Parents must be traversable by the postgres user.
            for parent in root.parents:
                if parent == Path("/"):
                    break
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)
        password = password or os.urandom(12).hex()
        pg = cls(root=root, port=free_port(), password=password, bindir=bindir, run_as=run_as)
        pg.sockdir.mkdir(exist_ok=True)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        if run_as:
            pw = pwd.getpwnam(run_as)
            for p in (pg.sockdir, pwfile):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            pg._cmd(
                [
                    pg.bin("initdb"),
                    "-D",
                    str(pg.datadir),
                    "-U",
                    SUPERUSER,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ]
            ),
            check=True,
            capture_output=True,
        )
        pwfile.unlink()
        opts = (
            f"-p {pg.port} -k {pg.sockdir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200 -c shared_buffers=64MB"
        )
        subprocess.run(
            pg._cmd(
                [pg.bin("pg_ctl"), "-D", str(pg.datadir), "-l", str(root / "log"), "-o", opts, "-w", "start"]
            ),
            check=True,
            capture_output=True,
        )
        return pg

    def stop(self) -> None:
        subprocess.run(
            self._cmd([self.bin("pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
