"""Single-purpose credential files: .pgpass, .netrc, .git-credentials, .vault-token, .npmrc."""

from __future__ import annotations

import re
from collections.abc import Iterator

from hoopctl.detect.parsers._util import Found, lines, value_span


def pgpass(text: str) -> Iterator[Found]:
    """`hostname:port:database:username:password`; `\\:` and `\\\\` escape inside fields."""
    for off, line in lines(text):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = 0
        i = 0
        while i < len(line) and fields < 4:
            if line[i] == "\\":
                i += 2
                continue
            if line[i] == ":":
                fields += 1
            i += 1
        if fields == 4 and i < len(line):
            yield ("pgpass-password", off + i, off + len(line))


_NETRC_TOKEN = re.compile(r"\S+")


def netrc(text: str) -> Iterator[Found]:
    """`machine HOST login USER password SECRET`, over any layout of whitespace and lines."""
    tokens = [(m.start(), m.group()) for m in _NETRC_TOKEN.finditer(text)]
    in_macdef = False
    for i, (_pos, tok) in enumerate(tokens):
        if tok == "macdef":
            in_macdef = True
        elif tok in ("machine", "default"):
            in_macdef = False
        if not in_macdef and tok in ("password", "passwd") and i + 1 < len(tokens):
            vpos, value = tokens[i + 1]
            yield ("netrc-password", vpos, vpos + len(value))


_URL_CRED = re.compile(r"^[a-z][a-z0-9+.-]*://[^:@/\s]*:(?P<pw>[^@\s]+)@", re.IGNORECASE)


def git_credentials(text: str) -> Iterator[Found]:
    """git's credential store: one `https://user:password@host` per line."""
    for off, line in lines(text):
        m = _URL_CRED.match(line.strip())
        if m:
            lead = len(line) - len(line.lstrip())
            yield ("git-credentials-password", off + lead + m.start("pw"), off + lead + m.end("pw"))


def vault_token(text: str) -> Iterator[Found]:
    """The Vault CLI's token helper file: the token and nothing else."""
    stripped = text.strip()
    if stripped and "\n" not in stripped:
        start = text.index(stripped)
        yield ("vault-token-file", start, start + len(stripped))


_NPMRC = re.compile(r"^\s*(?:(?://[^\s=]*:)|)(?P<key>_authToken|_auth|_password|password)\s*=", re.IGNORECASE)


def npmrc(text: str) -> Iterator[Found]:
    """`//registry.npmjs.org/:_authToken=...`, `_auth=base64`, `_password=base64`."""
    for off, line in lines(text):
        m = _NPMRC.match(line)
        if m:
            s, e = value_span(line, m.end(), comments=False)
            if e > s:
                yield ("npmrc-auth", off + s, off + e)
