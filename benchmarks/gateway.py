"""Gateway throughput and added latency: pgbench -S through five paths, alternating, one run.

    .venv/bin/python benchmarks/gateway.py [--seconds 8] [--rounds 3] [--clients 8]

Starts its own PostgreSQL (hoopctl.localpg), then, in separate processes:
  direct     pgbench straight to PostgreSQL (TCP, SCRAM)
  pgbouncer  /usr/sbin/pgbouncer in session mode
  relay      a bare byte relay on uvloop (no parsing): the ceiling for a Python proxy
  gateway    the full gateway: policy (pglast), one masking rule, recording (--fsync, default batch)
  gateway2   the same with two worker processes on one port (SO_REUSEPORT)
  --floor adds framing and recorded (benchmarks/proxy_floor.py): what any inspecting,
  recording Python proxy must spend at least, to read the gateway's ratios against
and runs `pgbench -S -c 8 -j 2 -T N` in simple and prepared mode against each,
rotating the order every round. Prints the median TPS, the ratios and the mean
latency the gateway adds; then, with one client, the latency a lone caller sees
(with 8 clients on 2 cores the mean latency is mostly queueing: 8 / TPS).
Targets: gateway >= 0.9 x relay, >= 0.6 x pgbouncer, added mean latency < 0.3 ms.
The proxy CPU includes every thread of the proxy process (the gateway's group commit too).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hoopctl.access.tokens import TokenAuthority, generate_key, load_key  # noqa: E402
from hoopctl.localpg import LocalPostgres, free_port  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy_floor  # noqa: E402

DB = "bench"
PGBOUNCER = "/usr/sbin/pgbouncer"


# ---------------------------------------------------------------- the bare relay


class _Pipe(asyncio.Protocol):
    def __init__(self) -> None:
        self.peer: asyncio.Transport | None = None
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.early.append(data)
        else:
            self.peer.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume_reading()


def _run_relay(listen_port: int, target_port: int) -> None:
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def client_factory() -> _Pipe:
            client = _Pipe()

            async def connect() -> None:
                up_tr, up = await loop.create_connection(_Pipe, "127.0.0.1", target_port)
                up.peer = client.transport
                client.peer = up_tr
                for chunk in client.early:
                    up_tr.write(chunk)
                client.early.clear()

            loop.create_task(connect())
            return client

        server = await loop.create_server(client_factory, "127.0.0.1", listen_port)
        await server.serve_forever()

    uvloop.install()
    asyncio.run(main())


# ---------------------------------------------------------------- the gateway


def _gateway_config(pg: LocalPostgres, work: Path, port: int, fsync: str = "batch") -> object:
    # Imported here, not at the top: a --baseline-src gateway must get its own classes.
    from hoopctl.gateway.config import GatewayConfig, Resource
    from hoopctl.gateway.masking import MaskingRules
    from hoopctl.gateway.policy import Policy

    key = work / "token.key"
    return GatewayConfig(
        listen_host="127.0.0.1",
        listen_port=port,
        resources={
            DB: Resource(
                name=DB,
                host="127.0.0.1",
                port=pg.port,
                dbname=DB,
                user="postgres",
                password=pg.password,
                sslmode="disable",
                content_masking=False,
            )
        },
        policy=Policy.from_roles({"reader": ["read"]}),
        masking=MaskingRules.from_config([{"name": "emails", "column": ["*email*"], "style": "partial"}]),
        recordings_dir=work / "recordings",
        token_key_file=key,
        fsync=fsync,
        fsync_interval_ms=5,
    )


class _AllowAll:
    """Ablation only (--ablate): a policy that judges nothing."""

    roles: dict = {}  # noqa: RUF012 - the gateway asks a role's grants when checking a token chain

    class _Verdict:
        allowed, classes, rule, message = True, frozenset(), "ablation", ""

    def session(self, role: str, **_kw: object) -> _AllowAll:
        return self

    def check_query(self, sql: str) -> object:
        return self._Verdict

    def check_parse(self, sql: str, name: str = "") -> object:
        return self._Verdict

    def judge_parse(self, sql: str) -> tuple[object, frozenset]:
        return self._Verdict, frozenset()

    def stage_statement(self, name: str, classes: frozenset) -> None:
        pass

    def confirm_statement(self, name: str, classes: frozenset) -> None:
        pass

    def inherit(self, old: object) -> None:
        pass

    def set_extra_grants(self, grants: frozenset) -> None:
        pass

    def check_execute(self, name: str) -> object:
        return self._Verdict

    def close_statement(self, name: str) -> None:
        pass

    def bind_portal(self, name: str, classes: frozenset) -> None:
        pass


class _NoRecording:
    """Ablation only (--ablate): a recorder that writes nothing."""

    def open_session(self, *a: object, **kw: object) -> _NoRecording:
        return self

    def statement(self, *a: object, **kw: object) -> int:
        return 0

    def result(self, *a: object, **kw: object) -> None:
        pass

    def close(self, *a: object) -> None:
        pass


def _run_gateway(
    pg: LocalPostgres,
    work: Path,
    port: int,
    reuse_port: bool,
    off: frozenset = frozenset(),
    fsync: str = "batch",
    src: str = "",
) -> None:
    import dataclasses

    import uvloop

    if src:
        # Another checkout (an earlier commit's worktree): the gateway code from there.
        for mod in [m for m in sys.modules if m == "hoopctl" or m.startswith("hoopctl.")]:
            del sys.modules[mod]
        sys.path.insert(0, src)

    from hoopctl.gateway.server import Gateway

    cfg = _gateway_config(pg, work, port, fsync)
    if "policy" in off:
        cfg = dataclasses.replace(cfg, policy=_AllowAll())
    if "masking" in off:
        cfg = dataclasses.replace(cfg, masking=None)
    recorder = _NoRecording() if "recording" in off else None
    sock = None
    if reuse_port:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(512)

    async def main() -> None:
        gw = Gateway(cfg, sock=sock, recorder=recorder)
        await gw.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await gw.drain(2)

    uvloop.install()
    if os.environ.get("BENCH_PROFILE") and not reuse_port:
        import cProfile

        cProfile.runctx("asyncio.run(main())", globals(), locals(), os.environ["BENCH_PROFILE"])
    else:
        asyncio.run(main())


# ---------------------------------------------------------------- pgbouncer


def _start_pgbouncer(pg: LocalPostgres, work: Path, port: int) -> subprocess.Popen:
    d = work / "pgbouncer"
    d.mkdir()
    (d / "userlist.txt").write_text(f'"postgres" "{pg.password}"\n')
    (d / "pgbouncer.ini").write_text(
        f"[databases]\n{DB} = host=127.0.0.1 port={pg.port} dbname={DB} user=postgres password={pg.password}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = scram-sha-256\nauth_file = {d / 'userlist.txt'}\n"
        "pool_mode = session\nmax_client_conn = 200\ndefault_pool_size = 40\n"
        f"logfile = {d / 'log'}\npidfile = {d / 'pid'}\n"
    )
    argv = [PGBOUNCER, str(d / "pgbouncer.ini")]
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for p in [work, d, *d.iterdir()]:
            os.chown(p, pw.pw_uid, pw.pw_gid)
        argv = ["runuser", "-u", "postgres", "--", *argv]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------- pgbench


def _wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port}")


def _proxy_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by the proxy processes and their children."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            procs = [psutil.Process(pid)]
            procs += procs[0].children(recursive=True)
            for p in procs:
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _pgbench(
    pg: LocalPostgres,
    port: int,
    user: str,
    password: str,
    mode: str,
    args: argparse.Namespace,
    pids: list[int] = (),
    clients: int = 0,
):
    clients = clients or args.clients
    cpu0 = _proxy_cpu(list(pids))
    out = subprocess.run(
        [
            pg.bin("pgbench"),
            "-n",
            "-S",
            "-M",
            mode,
            "-c",
            str(clients),
            "-j",
            str(min(2, clients)),
            "-T",
            str(args.seconds),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            user,
            DB,
        ],
        env={**os.environ, "PGPASSWORD": password},
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"pgbench on port {port} failed: {out.stderr.strip()[-400:]}")
    cpu = _proxy_cpu(list(pids)) - cpu0
    tps = float(re.search(r"tps = ([\d.]+)", out.stdout).group(1))
    lat = float(re.search(r"latency average = ([\d.]+) ms", out.stdout).group(1))
    txns = int(re.search(r"number of transactions actually processed: (\d+)", out.stdout).group(1))
    return tps, lat, (cpu / txns * 1e6 if pids and txns else float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--scale", type=int, default=5)
    ap.add_argument("--no-workers", action="store_true", help="skip the two-worker (SO_REUSEPORT) gateway")
    ap.add_argument(
        "--ablate", action="store_true", help="add gateways without policy / masking / recording / all"
    )
    ap.add_argument(
        "--floor", action="store_true", help="add the framing-only and framing+recording floor proxies"
    )
    ap.add_argument("--only", default="", help="comma-separated targets to run (default: all)")
    ap.add_argument(
        "--fsync", default="batch", choices=("batch", "os", "always"), help="the gateway's recording fsync"
    )
    ap.add_argument(
        "--also-fsync",
        default="",
        help="comma-separated fsync policies to run as extra gateways (gw-fsync-<policy>) in the same rounds",
    )
    ap.add_argument(
        "--baseline-src",
        default="",
        help="also run the gateway from this checkout (e.g. `git worktree add /tmp/old HEAD~3`) as gw-baseline",
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="hoopctl-bench-"))
    os.chmod(work, 0o755)
    procs: list = []
    pg = LocalPostgres.start(work / "pg")
    try:
        pg.psql(f"CREATE DATABASE {DB}")
        subprocess.run(
            [pg.bin("pgbench"), "-i", "-q", "-s", str(args.scale), "-d", pg.dsn(DB)],
            check=True,
            capture_output=True,
        )
        pg.psql("VACUUM ANALYZE", DB)
        generate_key(work / "token.key")
        token = TokenAuthority(load_key(work / "token.key")).issue("bench", DB, "reader", 3600)
        body, _, sig = token.rpartition(".")

        ports = {name: free_port() for name in ("pgbouncer", "relay", "gateway", "gateway2")}
        ablations = {
            "no-policy": frozenset({"policy"}),
            "no-masking": frozenset({"masking"}),
            "no-record": frozenset({"recording"}),
            "bare-gw": frozenset({"policy", "masking", "recording"}),
        }
        procs.append(_start_pgbouncer(pg, work, ports["pgbouncer"]))
        ctx = multiprocessing.get_context("fork")
        procs.append(ctx.Process(target=_run_relay, args=(ports["relay"], pg.port), daemon=True))
        procs.append(
            ctx.Process(
                target=_run_gateway,
                args=(pg, work, ports["gateway"], False, frozenset(), args.fsync),
                daemon=True,
            )
        )
        owner = {"pgbouncer": procs[0:1], "relay": procs[1:2], "gateway": procs[2:3]}
        targets = {
            "direct": (pg.port, "postgres", pg.password),
            "pgbouncer": (ports["pgbouncer"], "postgres", pg.password),
            "relay": (ports["relay"], "postgres", pg.password),
            "gateway": (ports["gateway"], body, sig),
        }
        if not args.no_workers:
            for _ in range(2):
                procs.append(
                    ctx.Process(
                        target=_run_gateway,
                        args=(pg, work, ports["gateway2"], True, frozenset(), args.fsync),
                        daemon=True,
                    )
                )
            owner["gateway2"] = procs[-2:]
            targets["gateway2"] = (ports["gateway2"], body, sig)
        if args.ablate:
            for name, off in ablations.items():
                ports[name] = free_port()
                procs.append(
                    ctx.Process(
                        target=_run_gateway, args=(pg, work, ports[name], False, off, args.fsync), daemon=True
                    )
                )
                owner[name] = procs[-1:]
                targets[name] = (ports[name], body, sig)
        if args.floor:
            (work / "floor").mkdir()
            for name, record_dir in (("framing", None), ("recorded", work / "floor")):
                ports[name] = free_port()
                procs.append(
                    ctx.Process(target=proxy_floor.run, args=(ports[name], pg.port, record_dir), daemon=True)
                )
                owner[name] = procs[-1:]
                targets[name] = (ports[name], "postgres", pg.password)
        for policy in filter(None, args.also_fsync.split(",")):
            name = f"gw-fsync-{policy}"
            ports[name] = free_port()
            procs.append(
                ctx.Process(
                    target=_run_gateway, args=(pg, work, ports[name], False, frozenset(), policy), daemon=True
                )
            )
            owner[name] = procs[-1:]
            targets[name] = (ports[name], body, sig)
        if args.baseline_src:
            ports["gw-baseline"] = free_port()
            procs.append(
                ctx.Process(
                    target=_run_gateway,
                    args=(pg, work, ports["gw-baseline"], False, frozenset(), args.fsync, args.baseline_src),
                    daemon=True,
                )
            )
            owner["gw-baseline"] = procs[-1:]
            targets["gw-baseline"] = (ports["gw-baseline"], body, sig)
        if args.only:
            keep = set(args.only.split(",")) | {"direct", "pgbouncer", "relay", "gateway"}
            keep |= {n for n in targets if n.startswith("gw-fsync-") or n == "gw-baseline"}
            targets = {k: v for k, v in targets.items() if k in keep}
        for p in procs[1:]:
            p.start()
        for port, _, _ in targets.values():
            _wait_port(port)

        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        names = list(targets)
        total = args.rounds * 2 * len(names)
        done = 0
        for rnd in range(args.rounds):
            order = names[rnd % len(names) :] + names[: rnd % len(names)]
            for mode in ("simple", "prepared"):
                for name in order:
                    port, user, password = targets[name]
                    pids = [p.pid for p in owner.get(name, [])]
                    results.setdefault((name, mode), []).append(
                        _pgbench(pg, port, user, password, mode, args, pids)
                    )
                    done += 1
                    print(f"\r  {done}/{total} runs", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        # One client: the latency a lone caller sees, without 8 clients queueing for 2 cores.
        alone = {}
        for mode in ("simple", "prepared"):
            for name in ("direct", "pgbouncer", "relay", "gateway"):
                port, user, password = targets[name]
                alone[(name, mode)] = _pgbench(pg, port, user, password, mode, args, clients=1)[1]
        _report(results, names, args)
        _report_alone(alone, args)
    finally:
        for p in procs:
            if isinstance(p, subprocess.Popen):
                p.terminate()
                p.wait(10)
            elif p.is_alive():
                p.terminate()
                p.join(10)
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def _report(results: dict, names: list[str], args: argparse.Namespace) -> None:
    print(
        f"pgbench -S -c {args.clients} -j 2 -T {args.seconds}, {args.rounds} rounds alternating; "
        f"median TPS (mean latency ms) on {os.cpu_count()} cores; gateway recording fsync={args.fsync}"
    )
    print(f"{'mode':<10}" + "".join(f"{n:>20}" for n in names))
    for mode in ("simple", "prepared"):
        row = f"{mode:<10}"
        for n in names:
            runs = results[(n, mode)]
            row += f"{statistics.median(r[0] for r in runs):>11.0f} ({statistics.median(r[1] for r in runs):5.3f})"
        print(row)
    print("proxy CPU per transaction, µs (user + system of the proxy processes; median)")
    for mode in ("simple", "prepared"):
        row = f"{mode:<10}"
        for n in names:
            row += f"{statistics.median(r[2] for r in results[(n, mode)]):>20.1f}"
        print(row)
    print()
    for mode in ("simple", "prepared"):
        med = {n: statistics.median(r[0] for r in results[(n, mode)]) for n in names}
        lat = {n: statistics.median(r[1] for r in results[(n, mode)]) for n in names}
        line = (
            f"{mode:<9} gateway/relay {med['gateway'] / med['relay']:.2f} (target >= 0.9)  "
            f"gateway/pgbouncer {med['gateway'] / med['pgbouncer']:.2f} (>= 0.6)  "
            f"gateway/direct {med['gateway'] / med['direct']:.2f}  "
            f"added latency {lat['gateway'] - lat['direct']:+.3f} ms (< 0.3)"
        )
        if "gateway2" in med:
            line += f"  2 workers/1 worker {med['gateway2'] / med['gateway']:.2f}"
        print(line)


def _report_alone(alone: dict, args: argparse.Namespace) -> None:
    print(f"\none client (pgbench -S -c 1 -T {args.seconds}): mean latency ms")
    for mode in ("simple", "prepared"):
        lat = {n: alone[(n, mode)] for n in ("direct", "pgbouncer", "relay", "gateway")}
        print(
            f"{mode:<9} "
            + "  ".join(f"{n} {v:.3f}" for n, v in lat.items())
            + f"  gateway adds {lat['gateway'] - lat['direct']:+.3f} ms (< 0.3)"
            + f", pgbouncer adds {lat['pgbouncer'] - lat['direct']:+.3f}"
        )


if __name__ == "__main__":
    main()
