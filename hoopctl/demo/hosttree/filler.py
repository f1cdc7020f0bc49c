"""Filler text that looks like a host's files (code, configs, logs), cheap to make in bulk.

Each kind has a pool of lines built once from templates with random names and numbers; a file is
then lines drawn from its pool. Filler holds no credential, though it does hold what a scanner
must stay quiet about in ordinary files: identifiers called `password`, hashes, UUIDs, commit ids.
"""

from __future__ import annotations

import random
import string

WORDS = [
    "user",
    "account",
    "order",
    "invoice",
    "payment",
    "session",
    "cache",
    "queue",
    "worker",
    "job",
    "task",
    "report",
    "metric",
    "event",
    "config",
    "client",
    "server",
    "request",
    "response",
    "handler",
    "router",
    "model",
    "record",
    "batch",
    "stream",
    "buffer",
    "index",
    "tenant",
    "region",
    "bucket",
    "object",
    "node",
    "cluster",
    "service",
    "backup",
    "snapshot",
    "ledger",
    "price",
    "cart",
    "item",
]
HOSTS = ("db01", "db02", "api-gw", "cache01", "mq01", "web03", "build7", "ci-runner-2", "auth01")
LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
PATHS = (
    "/api/v1/orders",
    "/api/v1/users/me",
    "/healthz",
    "/metrics",
    "/login",
    "/static/app.js",
    "/api/v2/search",
)


def _ident(rng: random.Random) -> str:
    return "_".join(rng.sample(WORDS, rng.randint(1, 2)))


def _camel(rng: random.Random) -> str:
    a, b = rng.sample(WORDS, 2)
    return a + b.capitalize()


def _uuid(rng: random.Random) -> str:
    h = rng.getrandbits(128).to_bytes(16, "big").hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def _sha(rng: random.Random, n: int = 40) -> str:
    return rng.getrandbits(n * 4).to_bytes(n // 2, "big").hex()


def _ts(rng: random.Random) -> str:
    return f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"


def _python(rng: random.Random) -> str:
    a, b, c = _ident(rng), _ident(rng), _camel(rng)
    return rng.choice(
        (
            f"def {a}(self, {b}, timeout=30):",
            f'    """Return the {a.replace("_", " ")} for {b.replace("_", " ")}."""',
            f"    {a} = self.{b}.get({b!r}, None)",
            f"    if not {a}:",
            f"        raise ValueError('missing {a}')",
            f"    return {c[0].upper() + c[1:]}({a}={a}, {b}={b})",
            f"from .{a} import {c[0].upper() + c[1:]}",
            f"import {rng.choice(('os', 'json', 'logging', 're', 'time', 'typing', 'asyncio'))}",
            f"log.info('processed %d {a}', len({b}))",
            f"    for {a} in self.{b}:",
            f"        total += {a}.amount * {rng.randint(1, 100)}",
            "",
            f"class {c[0].upper() + c[1:]}:",
            f"    {a}: int = {rng.randint(0, 1000)}",
            f"    # {rng.choice(WORDS)} is cached for {rng.randint(1, 60)} minutes",
            "    if not user.check_password(password):",
            f"    cache_key = '{a}:{_sha(rng, 8)}'",
        )
    )


def _js(rng: random.Random) -> str:
    a, b, c = _camel(rng), _camel(rng), _ident(rng)
    return rng.choice(
        (
            f"export function {a}({b}) {{",
            f"  const {a} = await fetch(`/api/{c}/${{{b}.id}}`);",
            f"  if (!{a}) throw new Error('{c} not found');",
            f"  return {{ ...{b}, {a}: {rng.randint(0, 99)} }};",
            "}",
            f"import {{ {a} }} from './{c}';",
            f"const {a} = require('{rng.choice(('express', 'lodash', 'axios', 'pg', 'zod'))}');",
            f"  // {rng.choice(WORDS)} handler retries {rng.randint(1, 5)} times",
            f"  {a}.on('{c}', ({b}) => console.log({b}));",
            "",
            f"  const passwordInput = document.getElementById('{c}-password');",
        )
    )


def _go(rng: random.Random) -> str:
    a, b = _camel(rng), _camel(rng)
    A = a[0].upper() + a[1:]
    return rng.choice(
        (
            f"func ({b[0]} *{A}) Handle(ctx context.Context, req *{A}Request) error {{",
            f"\tif err := {b}.Validate(); err != nil {{",
            f'\t\treturn fmt.Errorf("{a}: %w", err)',
            "\t}",
            "}",
            f"\t{a} := make(map[string]int, {rng.randint(1, 64)})",
            f"type {A} struct {{",
            f'\t{A}ID string `json:"{a}_id"`',
            f'\tlog.Printf("{a} done in %s", time.Since(start))',
            "",
        )
    )


def _yaml(rng: random.Random) -> str:
    a, b = _ident(rng), _ident(rng)
    return rng.choice(
        (
            f"{a}:",
            f"  {b}: {rng.randint(1, 9000)}",
            f"  {b}_enabled: {rng.choice(('true', 'false'))}",
            f"  host: {rng.choice(HOSTS)}.internal",
            f"  timeout: {rng.randint(1, 120)}s",
            f"  - name: {b}",
            f"    image: registry.internal/{a}:{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
            f"  id: {_uuid(rng)}",
            f"# {rng.choice(WORDS)} settings",
        )
    )


def _ini(rng: random.Random) -> str:
    a, b = _ident(rng), _ident(rng)
    return rng.choice(
        (
            f"[{a}]",
            f"{b} = {rng.randint(0, 5000)}",
            f"{b}_path = /var/lib/{a}",
            f"{b} = {rng.choice(('yes', 'no', 'on', 'off'))}",
            f"; {rng.choice(WORDS)} {rng.choice(WORDS)}",
            "",
        )
    )


def _log(rng: random.Random) -> str:
    return rng.choice(
        (
            f"{_ts(rng)} {rng.choice(HOSTS)} app[{rng.randint(100, 30000)}]: {rng.choice(LEVELS)} {_ident(rng)} id={_uuid(rng)} took {rng.randint(1, 900)}ms",
            f'10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)} - - [{_ts(rng)}] "GET {rng.choice(PATHS)} HTTP/1.1" {rng.choice((200, 200, 200, 304, 404, 500))} {rng.randint(10, 90000)} "-" "curl/8.5.0"',
            f"{_ts(rng)} {rng.choice(HOSTS)} deploy[{rng.randint(100, 30000)}]: checked out commit {_sha(rng)}",
            f"{_ts(rng)} {rng.choice(HOSTS)} sshd[{rng.randint(100, 30000)}]: Accepted publickey for deploy from 10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)} port {rng.randint(30000, 65000)} ssh2: ED25519 SHA256:{_sha(rng, 32)[:43]}",
            f"{_ts(rng)} {rng.choice(HOSTS)} backup[{rng.randint(100, 30000)}]: wrote {_ident(rng)}.tar.zst sha256={_sha(rng, 64)}",
            f"{_ts(rng)} {rng.choice(HOSTS)} app[{rng.randint(100, 30000)}]: WARN login failed for user {rng.choice(WORDS)}: invalid password",
        )
    )


def _md(rng: random.Random) -> str:
    w = rng.choices(WORDS, k=rng.randint(6, 14))
    return rng.choice(
        (
            " ".join(w).capitalize() + ".",
            f"## {' '.join(w[:3]).title()}",
            f"- `{_ident(rng)}`: {' '.join(w[3:8])}",
            "",
            f"Run `make {rng.choice(WORDS)}` to rebuild the {w[0]}.",
        )
    )


def _sql(rng: random.Random) -> str:
    a, b = _ident(rng), _ident(rng)
    return rng.choice(
        (
            f"INSERT INTO {a} (id, {b}, created_at) VALUES ({rng.randint(1, 99999)}, '{rng.choice(WORDS)}', now());",  # noqa: S608 - filler text, never executed
            f"CREATE INDEX ON {a} ({b});",
            f"SELECT {b}, count(*) FROM {a} GROUP BY 1;",  # noqa: S608
            f"-- migration {_sha(rng, 12)}: {b}",
        )
    )


MAKERS = {
    "py": _python,
    "js": _js,
    "go": _go,
    "yaml": _yaml,
    "ini": _ini,
    "log": _log,
    "md": _md,
    "sql": _sql,
}


class Filler:
    """Line pools for each kind of file, drawn from with one seeded generator."""

    def __init__(self, rng: random.Random, pool_size: int = 400) -> None:
        self.rng = rng
        self.pools = {k: [make(rng) for _ in range(pool_size)] for k, make in MAKERS.items()}
        self.avg = {k: sum(map(len, v)) / len(v) + 1 for k, v in self.pools.items()}

    def lines(self, kind: str, n: int) -> list[str]:
        return self.rng.choices(self.pools[kind], k=max(0, n))

    def text(self, kind: str, nbytes: int) -> str:
        """About `nbytes` of `kind` filler, whole lines, ending with a newline."""
        n = max(1, int(nbytes / self.avg[kind]))
        return "\n".join(self.lines(kind, n)) + "\n"

    def word(self) -> str:
        return self.rng.choice(WORDS)

    def name(self) -> str:
        return "".join(self.rng.choices(string.ascii_lowercase, k=self.rng.randint(4, 9)))
