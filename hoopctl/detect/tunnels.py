"""Stray tunnels from a process snapshot: ssh forwards, ControlMaster muxes, autossh, socat/ncat relays.

Pure classification: a `Snapshot` in, `TunnelFinding`s out (command lines are read by
`hoopctl.detect.cmdlines`). What is recognised:

- ssh clients with -L/-R/-D/-w or the same as `-o LocalForward=...`;
- forwards from ssh_config: with their target when the caller passes the config texts the client
  read (`ssh_configs`), else as LISTEN sockets of an ssh process that no argv forward explains
  (also what `ssh -O forward` adds to a master);
- ControlMaster muxes (`ssh: PATH [mux]`, kept alive by ControlPersist);
- autossh, and any wrapper whose own command line runs ssh, when its child ssh forwards;
- socat and ncat relays (a listening address plus a target);
- sshd session processes that carry forwards: ESTABLISHED sockets to something other than the
  client (-L/-D), LISTEN sockets (-R).

When the client and the sshd of one tunnel are both on this host, each side's finding borrows
what only the other side knows (the target of a config-file forward, the target behind an -R).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hoopctl.detect.cmdlines import (
    Forward,
    Relay,
    SshArgs,
    destination_host,
    forwards_from_ssh_config,
    hostport,
    parse_forward,
    parse_ncat_argv,
    parse_socat_argv,
    parse_ssh_argv,
)
from hoopctl.detect.procsnap import Endpoint, Proc, Snapshot, Sock, is_ip, reparented

__all__ = [
    "KINDS",
    "Forward",
    "Protected",
    "Relay",
    "SshArgs",
    "TunnelFinding",
    "classify_tunnels",
    "destination_host",
    "forwards_from_ssh_config",
    "parse_forward",
    "parse_ncat_argv",
    "parse_protected",
    "parse_socat_argv",
    "parse_ssh_argv",
]

KINDS = ("local", "remote", "dynamic", "tun", "mux", "autossh", "socat", "ncat", "sshd-forward")

_MUX_TITLE = re.compile(r"^ssh: (?P<path>.+) \[mux\]$")
_SSHD_SESSION = re.compile(r"^sshd(?:-session)?: (?P<who>\S+?)(?:@(?P<tty>\S+))?(?: \[(?P<tag>\w+)\])?$")
_SSH_WORD = re.compile(r"(?:^|[\s/;&|(`'\"])(?:auto)?ssh(?:\s|$)")
# parents that can loop around ssh (restart it); `timeout` or `nohup` bound or exec it instead
_SHELLISH = frozenset({"sh", "bash", "dash", "zsh", "ksh", "python", "python3", "perl"})


# --------------------------------------------------------------------------- protected resources


@dataclass(frozen=True)
class Protected:
    """A protected resource: a host name, an address or a CIDR, with a port (None = any port)."""

    spec: str
    host: str | None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    port: int | None

    def matches(self, host: str | None, port: int | None) -> bool:
        if host is None or (self.port is not None and port != self.port):
            return False
        host = host.strip("[]").lower()
        candidates = {host}
        if host == "localhost":
            candidates |= {"127.0.0.1", "::1"}
        for cand in candidates:
            if self.network is not None and is_ip(cand):
                addr = ipaddress.ip_address(cand)
                if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                    addr = addr.ipv4_mapped  # a dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d
                if addr in self.network:
                    return True
            elif self.host is not None and cand == self.host:
                return True
        return False


_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


def parse_protected(spec: str) -> Protected:
    """Parse `HOST:PORT`, `[V6]:PORT`, `CIDR:PORT` (PORT may be `*`). Raises ValueError on bad input."""
    text = spec.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"protected resource {spec!r}: expected [ADDRESS]:PORT")
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"protected resource {spec!r}: expected HOST:PORT (or CIDR:PORT)")
    if port_text == "*":
        port = None
    elif port_text.isdigit() and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise ValueError(f"protected resource {spec!r}: port must be 1-65535 or *")
    if host.lower() == "localhost":
        # loopback either way: a name on the sshd side that means "this host"
        return Protected(spec, "localhost", ipaddress.ip_network("127.0.0.0/8"), port)
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        if not _HOSTNAME.match(host):
            raise ValueError(
                f"protected resource {spec!r}: {host!r} is not a host, address or CIDR"
            ) from None
        return Protected(spec, host.lower(), None, port)
    return Protected(spec, None, network, port)


def _any_protected(protected: Sequence[Protected], host: str | None, port: int | None) -> bool:
    return any(p.matches(host, port) for p in protected)


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class TunnelFinding:
    """One tunnel or relay. `listen` are addresses as seen in sockets when known, else as asked.

    `peer` is the other end of the ssh connection (destination for a client, client address for
    sshd); `via` a related process (autossh's ssh child, the other side's pid); `source` tells
    where the forward was read from (argv, config, sockets, mux, wrapper, sshd). `protected` is
    true when the target matches a protected resource, or, for a SOCKS forward or a forward whose
    target is unknown, when a connection it carries right now does (seen on the sshd side when
    that sshd runs on this host).
    """

    pid: int
    user: str
    kind: str
    listen: tuple[str, ...]
    listen_port: int | None
    target: str | None
    age: int
    ppid: int
    reparented: bool
    protected: bool
    source: str
    command: str
    peer: str | None = None
    via: int | None = None


def _basename(proc: Proc) -> str:
    return os.path.basename(proc.cmdline[0]) if proc.cmdline else proc.name


def _title(proc: Proc) -> str:
    # a rewritten process title (ssh mux, sshd sessions) comes back padded or split on spaces
    return " ".join(a for a in proc.cmdline if a)


def _is_ssh_client(proc: Proc) -> bool:
    return proc.name == "ssh" or (_basename(proc) == "ssh" and proc.name not in ("sshd", "sshd-session"))


def _sshd_session(proc: Proc) -> re.Match[str] | None:
    if proc.name not in ("sshd", "sshd-session"):
        return None
    m = _SSHD_SESSION.match(_title(proc))
    if m is None or m.group("tag") is not None:  # [priv], [listener], [preauth], [net], [accepted]
        return None
    return m


def _listens_on(proc: Proc, port: int | None) -> tuple[str, ...]:
    return tuple(sorted({str(s.laddr) for s in proc.listens() if s.laddr.port == port}))


@dataclass
class _Pairs:
    """ssh client <-> sshd session pairs on this host, found by matching their TCP connection."""

    client_to_sshd: dict[int, int]
    sshd_to_client: dict[int, int]
    session_sock: dict[int, Sock]  # sshd pid -> its client connection


def _pair_sessions(snapshot: Snapshot, sessions: Sequence[Proc], clients: Sequence[Proc]) -> _Pairs:
    daemon_ports = {
        s.laddr.port
        for p in snapshot.procs.values()
        if p.name in ("sshd", "sshd-session") and _sshd_session(p) is None
        for s in p.listens()
    }
    session_sock: dict[int, Sock] = {}
    for proc in sessions:
        est = proc.established()
        own = {s.laddr.port for s in proc.listens()}
        pick = [s for s in est if s.laddr.port in daemon_ports and s.laddr.port not in own]
        if not pick:
            pick = sorted((s for s in est if s.laddr.port not in own), key=lambda s: s.fd)
        if pick:
            session_sock[proc.pid] = pick[0]
    by_conn = {(s.raddr, s.laddr): pid for pid, s in session_sock.items()}
    c2s: dict[int, int] = {}
    for proc in clients:
        for s in proc.established():
            pid = by_conn.get((s.laddr, s.raddr))
            if pid is not None:
                c2s[proc.pid] = pid
    return _Pairs(c2s, {v: k for k, v in c2s.items()}, session_sock)


def _sshd_targets(proc: Proc, session: Sock | None) -> list[Endpoint]:
    """Outbound connections of an sshd session: not its client, not accepted on its own -R listeners."""
    own = {s.laddr.port for s in proc.listens()}
    out: list[Endpoint] = []
    for s in proc.established():
        if session is not None and s.laddr == session.laddr and s.raddr == session.raddr:
            continue
        if s.laddr.port in own or s.raddr is None:
            continue
        if s.raddr not in out:
            out.append(s.raddr)
    return out


class _Builder:
    def __init__(self, snapshot: Snapshot, protected: Sequence[Protected], subreapers: frozenset[str]):
        self.snap = snapshot
        self.protected = protected
        self.subreapers = subreapers
        self.out: list[TunnelFinding] = []

    def add(
        self,
        proc: Proc,
        kind: str,
        listen: Iterable[str],
        listen_port: int | None,
        target_host: str | None,
        target_port: int | None,
        target_text: str | None,
        source: str,
        *,
        peer: str | None = None,
        via: int | None = None,
        extra_targets: Sequence[Endpoint] = (),
    ) -> None:
        protected = _any_protected(self.protected, target_host, target_port) or any(
            _any_protected(self.protected, e.ip, e.port) for e in extra_targets
        )
        self.out.append(
            TunnelFinding(
                pid=proc.pid,
                user=proc.user,
                kind=kind,
                listen=tuple(listen),
                listen_port=listen_port,
                target=target_text,
                age=self.snap.age(proc),
                ppid=proc.ppid,
                reparented=reparented(self.snap, proc, self.subreapers),
                protected=protected,
                source=source,
                command=proc.name,
                peer=peer,
                via=via,
            )
        )


def classify_tunnels(
    snapshot: Snapshot,
    protected: Sequence[Protected] = (),
    *,
    subreapers: frozenset[str] = frozenset(),
    ssh_configs: Mapping[int, Sequence[str]] | None = None,
) -> list[TunnelFinding]:
    """Every tunnel and relay in `snapshot`, sorted by pid then kind.

    `ssh_configs` maps an ssh client's pid to the ssh_config texts it read (see
    `hoopctl.host.procs.read_ssh_configs`): a config forward then gets its target, once a LISTEN
    socket of that client confirms it (local, dynamic) or as configured (remote).
    """
    b = _Builder(snapshot, protected, subreapers)
    procs = list(snapshot.procs.values())
    clients = [p for p in procs if _is_ssh_client(p)]
    sessions = [p for p in procs if _sshd_session(p) is not None]
    pairs = _pair_sessions(snapshot, sessions, clients)
    parsed: dict[int, SshArgs] = {}
    for proc in clients:
        if not _MUX_TITLE.match(_title(proc)):
            parsed[proc.pid] = parse_ssh_argv(proc.cmdline)
    from_config = {
        pid: _config_forwards(parsed[pid], texts)
        for pid, texts in (ssh_configs or {}).items()
        if pid in parsed
    }
    every: dict[int, tuple[Forward, ...]] = {}
    for proc in clients:
        every[proc.pid] = _ssh_client_findings(
            b, proc, parsed.get(proc.pid), pairs, from_config.get(proc.pid, ())
        )
    for proc in sessions:
        _sshd_findings(b, proc, pairs, every)
    for proc in procs:
        _wrapper_findings(b, proc, parsed)
        _relay_findings(b, proc)
    return sorted(b.out, key=lambda f: (f.pid, f.kind, f.listen, f.target or ""))


def _peer_of(args: SshArgs | None) -> str | None:
    if args is None or args.destination is None:
        return None
    return args.destination


def _config_forwards(args: SshArgs, texts: Sequence[str]) -> list[Forward]:
    cleared = args.options.get("clearallforwardings", ("no",))[0].lower() == "yes"
    if cleared:
        return []
    host = destination_host(args.destination)
    return [f for text in texts for f in forwards_from_ssh_config(text, host)]


def _ssh_client_findings(
    b: _Builder, proc: Proc, args: SshArgs | None, pairs: _Pairs, config: Sequence[Forward] = ()
) -> tuple[Forward, ...]:
    """Findings of one ssh client; returns the forwards it is known to carry (argv + confirmed config)."""
    sshd_pid = pairs.client_to_sshd.get(proc.pid)
    seen_targets: list[Endpoint] = []
    if sshd_pid is not None:
        sshd = b.snap.procs[sshd_pid]
        seen_targets = _sshd_targets(sshd, pairs.session_sock.get(sshd_pid))
    mux = _MUX_TITLE.match(_title(proc))
    if mux is not None:
        listens = sorted({str(s.laddr) for s in proc.listens()})
        ports = sorted({s.laddr.port for s in proc.listens()})
        target = str(seen_targets[0]) if len(seen_targets) == 1 else None
        b.add(
            proc,
            "mux",
            [mux.group("path"), *listens],
            ports[0] if ports else None,
            seen_targets[0].ip if len(seen_targets) == 1 else None,
            seen_targets[0].port if len(seen_targets) == 1 else None,
            target,
            "mux",
            via=sshd_pid,
            extra_targets=seen_targets,
        )
        return ()
    if args is None or args.control_command is not None:
        return ()  # `ssh -O ...` talks to a master and exits: the master is what to report
    peer = _peer_of(args)
    explained: set[int] = set()
    listening = {s.laddr.port for s in proc.listens()}
    carried = list(args.forwards)
    taken = {f.listen_port for f in args.forwards if f.kind in ("local", "dynamic")}
    for fwd in config:
        if fwd.kind == "remote":
            carried.append(fwd)
        elif fwd.listen_port in listening and fwd.listen_port not in taken:
            # a config forward counts once its socket shows (ssh may have failed to bind it)
            carried.append(fwd)
            taken.add(fwd.listen_port)
    for n, fwd in enumerate(carried):
        if fwd.kind in ("local", "dynamic"):
            seen = _listens_on(proc, fwd.listen_port) if fwd.listen_port is not None else ()
            listen = seen or (fwd.listen_text,)
            if fwd.listen_port is not None:
                explained.add(fwd.listen_port)
        elif fwd.kind == "remote":
            listen = (f"remote:{fwd.listen_text}",)
        else:
            listen = (fwd.listen_text,)
        source = "argv" if n < len(args.forwards) else "config"
        extra = seen_targets if fwd.kind == "dynamic" else ()
        b.add(
            proc,
            fwd.kind,
            listen,
            fwd.listen_port,
            fwd.target_host,
            fwd.target_port,
            fwd.target_text,
            source,
            peer=peer,
            via=sshd_pid,
            extra_targets=extra,
        )
    persist = args.options.get("controlpersist", ("no",))[0].lower() not in ("no", "false")
    if args.master and (persist or "f" in args.flags):
        b.add(
            proc, "mux", [args.control_path or "?"], None, None, None, None, "argv", peer=peer, via=sshd_pid
        )
    # Forwards from ssh_config or added through the mux: only their LISTEN sockets show.
    unexplained: dict[int, list[str]] = {}
    for s in proc.listens():
        if s.laddr.port not in explained:
            unexplained.setdefault(s.laddr.port, []).append(str(s.laddr))
    for port, addrs in sorted(unexplained.items()):
        one = seen_targets[0] if len(seen_targets) == 1 and len(unexplained) == 1 else None
        b.add(
            proc,
            "local",
            sorted(set(addrs)),
            port,
            one.ip if one else None,
            one.port if one else None,
            str(one) if one else None,
            "sockets",
            peer=peer,
            via=sshd_pid,
            extra_targets=seen_targets if len(unexplained) == 1 else (),
        )
    return tuple(carried)


def _sshd_findings(
    b: _Builder,
    proc: Proc,
    pairs: _Pairs,
    carried: Mapping[int, tuple[Forward, ...]],
) -> None:
    session = pairs.session_sock.get(proc.pid)
    peer = str(session.raddr) if session is not None and session.raddr is not None else None
    client_pid = pairs.sshd_to_client.get(proc.pid)
    client_forwards = carried.get(client_pid, ()) if client_pid is not None else ()
    client = b.snap.procs.get(client_pid) if client_pid is not None else None
    # -R: sshd listens for the client; the target is only known on the client's side.
    by_port: dict[int, list[str]] = {}
    for s in proc.listens():
        by_port.setdefault(s.laddr.port, []).append(str(s.laddr))
    for port, addrs in sorted(by_port.items()):
        fwd = next((f for f in client_forwards if f.kind == "remote" and f.listen_port == port), None)
        b.add(
            proc,
            "sshd-forward",
            sorted(set(addrs)),
            port,
            fwd.target_host if fwd else None,
            fwd.target_port if fwd else None,
            fwd.target_text if fwd else None,
            "sshd",
            peer=peer,
            via=client_pid,
        )
    # -L/-D: sshd connects out to the target.
    for target in _sshd_targets(proc, session):
        listen: tuple[str, ...] = ()
        listen_port = None
        if client is not None:
            fwd = next(
                (
                    f
                    for f in client_forwards
                    if f.kind == "local"
                    and f.target_port == target.port
                    and _same_host(f.target_host, target.ip)
                ),
                None,
            )
            if fwd is not None:
                listen_port = fwd.listen_port
                listen = _listens_on(client, fwd.listen_port) or (fwd.listen_text,)
        b.add(
            proc,
            "sshd-forward",
            listen,
            listen_port,
            target.ip,
            target.port,
            str(target),
            "sshd",
            peer=peer,
            via=client_pid,
        )


def _same_host(name: str | None, ip: str) -> bool:
    if name is None:
        return False
    name = name.lower()
    if name == ip:
        return True
    return name == "localhost" and ip in ("127.0.0.1", "::1")


def _wrapper_findings(b: _Builder, proc: Proc, parsed: Mapping[int, SshArgs]) -> None:
    """autossh (by name), or a wrapper whose own command line runs ssh and whose child ssh forwards."""
    is_autossh = proc.name == "autossh" or _basename(proc) == "autossh"
    if not is_autossh:
        if _is_ssh_client(proc) or proc.name in ("sshd", "sshd-session") or proc.pid <= 1:
            return
        if proc.name not in _SHELLISH or not _SSH_WORD.search(_title(proc)):
            return
    children = [c for c in b.snap.children_of(proc.pid) if c.pid in parsed and parsed[c.pid].forwards]
    found = False
    for child in children:
        for fwd in parsed[child.pid].forwards:
            seen = _listens_on(child, fwd.listen_port) if fwd.kind in ("local", "dynamic") else ()
            listen = seen or ((f"remote:{fwd.listen_text}",) if fwd.kind == "remote" else (fwd.listen_text,))
            b.add(
                proc,
                "autossh",
                listen,
                fwd.listen_port,
                fwd.target_host,
                fwd.target_port,
                fwd.target_text,
                "argv" if is_autossh else "wrapper",
                peer=parsed[child.pid].destination,
                via=child.pid,
            )
            found = True
    if is_autossh and not found:
        # between restarts autossh has no ssh child: read its own argv (minus autossh's -M PORT)
        argv = list(proc.cmdline)
        cleaned = [argv[0]] if argv else ["autossh"]
        skip = False
        for arg in argv[1:]:
            if skip:
                skip = False
                continue
            if arg == "-M":
                skip = True
                continue
            if arg.startswith("-M") and arg[2:].replace(":", "").isdigit():
                continue
            cleaned.append(arg)
        args = parse_ssh_argv(cleaned)
        for fwd in args.forwards:
            prefix = "remote:" if fwd.kind == "remote" else ""
            b.add(
                proc,
                "autossh",
                (prefix + fwd.listen_text,),
                fwd.listen_port,
                fwd.target_host,
                fwd.target_port,
                fwd.target_text,
                "argv",
                peer=args.destination,
            )


_NCAT_NAMES = frozenset({"ncat", "nc", "netcat", "nc.openbsd", "nc.traditional"})


def _relay_findings(b: _Builder, proc: Proc) -> None:
    if proc.name == "socat":
        parent = b.snap.procs.get(proc.ppid)
        if parent is not None and parent.name == "socat" and parent.cmdline == proc.cmdline:
            return  # a per-connection child of a `fork` listener: the listener is the finding
        relay = parse_socat_argv(proc.cmdline)
        kind = "socat"
    elif proc.name in _NCAT_NAMES:
        relay = parse_ncat_argv(proc.cmdline)
        kind = "ncat"
    else:
        return
    if relay is None:
        return
    seen = _listens_on(proc, relay.listen_port) if relay.listen_port is not None else ()
    listen = seen or (hostport(relay.listen_host or "*", relay.listen_port),)
    b.add(
        proc,
        kind,
        listen,
        relay.listen_port,
        relay.target_host,
        relay.target_port,
        relay.target_text,
        "argv",
    )
