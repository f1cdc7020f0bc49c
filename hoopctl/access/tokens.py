"""Short-lived, attenuable gateway credentials (macaroons, via pymacaroons).

A token is `hoop1.<body>.<sig>`: the body lists the macaroon's identifier and its
first-party caveats (identity, resource, role, expiry, ...), the signature is the
HMAC chain over them rooted in the gateway's key. Anyone holding a token can
append caveats offline (attenuation, for nested agents) but never remove one, and
only the gateway, which holds the key, can check the chain.

Because the gateway can recompute the signature from the body, the signature works
as a per-token password: a client may authenticate with SCRAM-SHA-256 as user
`hoop1.<body>` with password `<sig>`, so the token never crosses the wire. Over TLS
it may instead send the whole token as a cleartext password.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pymacaroons import Macaroon
from pymacaroons.caveat import Caveat

PREFIX = "hoop1"
LOCATION = "hoopctl"
KEY_BYTES = 32

# Caveat keys, each "key = value". Order matters: later caveats come from children.
IDENTITY, RESOURCE, ROLE, EXPIRES, TOKEN_ID = "identity", "resource", "role", "expires", "tid"
PRINCIPAL_SEPARATOR = ">"  # between the identities of a chain; no identity may contain it
MAX_STATEMENTS, CLIENT_CIDR = "max_statements", "client_cidr"
KNOWN_CAVEATS = {IDENTITY, RESOURCE, ROLE, EXPIRES, TOKEN_ID, MAX_STATEMENTS, CLIENT_CIDR}


class TokenError(ValueError):
    """A token that cannot be read or built (malformed input)."""


class AuthError(Exception):
    """A token that was read but must not be accepted; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class Credential:
    """What an accepted token grants. `chain` lists identities from root to leaf."""

    identity: str
    resource: str
    role: str
    token_id: str
    chain: tuple[str, ...]
    token_ids: tuple[str, ...]
    roles: tuple[str, ...]
    expires_at: float
    max_statements: int | None = None
    # Its role was narrowed (at some step) without a name of its own: it is its parent with
    # less, and the parent's grants are not for it (nor may it name itself into a sibling's).
    # See principal_of.
    narrowed_in_place: bool = False

    @property
    def principal(self) -> str:
        """Who just-in-time grants and requests are for: the identity chain from the one the
        token was issued to. A nested agent names itself, so its name alone proves nothing:
        `ci-job>helper` is the job's helper, and nobody else can be it."""
        return PRINCIPAL_SEPARATOR.join(self.chain)


@dataclass(frozen=True, slots=True)
class TokenBody:
    """The readable part of a token: identifier and caveats, no secret."""

    identifier: str
    caveats: tuple[str, ...]

    def encode(self) -> str:
        raw = json.dumps({"id": self.identifier, "c": list(self.caveats)}, separators=(",", ":"))
        return f"{PREFIX}.{_b64(raw.encode())}"

    @classmethod
    def decode(cls, text: str) -> TokenBody:
        prefix, _, body = text.partition(".")
        if prefix != PREFIX or not body:
            raise TokenError("not a hoopctl token")
        try:
            data = json.loads(_unb64(body))
            identifier, caveats = data["id"], data["c"]
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise TokenError("malformed token body") from exc
        if not isinstance(identifier, str) or not all(isinstance(c, str) for c in caveats):
            raise TokenError("malformed token body")
        return cls(identifier, tuple(caveats))

    def fields(self) -> list[tuple[str, str]]:
        out = []
        for caveat in self.caveats:
            key, sep, value = caveat.partition(" = ")
            if not sep:
                raise TokenError(f"malformed caveat {caveat!r}")
            out.append((key, value))
        return out


def split_token(token: str) -> tuple[str, str]:
    """`hoop1.<body>.<sig>` -> (`hoop1.<body>`, `<sig>`)."""
    body, sep, sig = token.strip().rpartition(".")
    if not sep or not body.startswith(PREFIX + ".") or not sig:
        raise TokenError("not a hoopctl token (expected hoop1.<body>.<signature>)")
    return body, sig


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _macaroon(body: TokenBody, *, key: bytes | None = None, signature: str | None = None) -> Macaroon:
    if key is not None:
        mac = Macaroon(location=LOCATION, identifier=body.identifier, key=key)
        for caveat in body.caveats:
            mac.add_first_party_caveat(caveat)
        return mac
    return Macaroon(
        location=LOCATION,
        identifier=body.identifier,
        caveats=[Caveat(caveat_id=c) for c in body.caveats],
        signature=signature,
    )


def attenuate(
    token: str,
    *,
    identity: str | None = None,
    role: str | None = None,
    resource: str | None = None,
    ttl_s: float | None = None,
    max_statements: int | None = None,
    client_cidr: str | None = None,
    now: float | None = None,
) -> str:
    """Narrows a token offline. Every new caveat only restricts; none can widen."""
    body_text, sig = split_token(token)
    body = TokenBody.decode(body_text)
    if not all(c in "0123456789abcdef" for c in sig):
        raise TokenError("malformed token signature")
    new = [f"{TOKEN_ID} = {secrets.token_hex(8)}"]
    if identity:
        new.append(f"{IDENTITY} = {_clean_identity(identity)}")
        # A named agent states its role too (its parent's, if not narrower): grants are for
        # tokens whose every step is a name and a role (Credential.narrowed_in_place).
        role = role or _last(body, ROLE)
    if resource:
        new.append(f"{RESOURCE} = {_clean(resource)}")
    if role:
        new.append(f"{ROLE} = {_clean(role)}")
    if ttl_s is not None:
        new.append(f"{EXPIRES} = {int((now or time.time()) + ttl_s)}")
    if max_statements is not None:
        new.append(f"{MAX_STATEMENTS} = {int(max_statements)}")
    if client_cidr:
        new.append(f"{CLIENT_CIDR} = {ipaddress.ip_network(client_cidr, strict=False)}")
    mac = _macaroon(body, signature=sig)
    for caveat in new:
        mac.add_first_party_caveat(caveat)
    child = TokenBody(body.identifier, (*body.caveats, *new))
    return f"{child.encode()}.{mac.signature}"


def principal_of(fields: list[tuple[str, str]]) -> tuple[str, bool]:
    """The principal a token's caveats name, and whether it may hold just-in-time grants: only
    if every step that narrowed its role also named it (identity, role, identity, role...)."""
    identities = [value for key, value in fields if key == IDENTITY]
    shape = "".join("I" if key == IDENTITY else "R" for key, _ in fields if key in (IDENTITY, ROLE))
    return PRINCIPAL_SEPARATOR.join(identities), shape == "IR" * len(identities)


def _last(body: TokenBody, key: str) -> str | None:
    found = None
    for caveat in body.caveats:
        name, _, value = caveat.partition(" = ")
        if name == key:
            found = value
    return found


def _clean(value: str) -> str:
    if not value or any(ch in value for ch in "\n\r=") or value != value.strip():
        raise TokenError(f"invalid caveat value {value!r}")
    return value


def _clean_identity(value: str) -> str:
    if PRINCIPAL_SEPARATOR in value:
        raise TokenError(f"an identity may not contain {PRINCIPAL_SEPARATOR!r}: {value!r}")
    return _clean(value)


def generate_key(path: Path) -> None:
    """Writes a new random key, readable by its owner only; never overwrites one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_hex(KEY_BYTES).encode() + b"\n")


def load_key(path: Path) -> bytes:
    """Reads the gateway's token key, refusing a file others can read or a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise TokenError(f"{path}: cannot read token key: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
            raise TokenError(
                f"{path}: token key must be a regular file readable by its owner only (chmod 600)"
            )
        text = f.read().strip()
    try:
        key = bytes.fromhex(text.decode())
    except ValueError as exc:
        raise TokenError(f"{path}: token key is not hex") from exc
    if len(key) < 16:
        raise TokenError(f"{path}: token key too short")
    return key


class TokenAuthority:
    """Issues and verifies tokens with the gateway's key.

    `role_contains(parent, child)` says whether role `child` grants nothing beyond
    `parent`; the gateway passes one built from its policy so that a child token
    naming a wider role than its parent is refused. `is_revoked(token_id)` is
    consulted for every token id in the chain.
    """

    def __init__(
        self,
        key: bytes,
        *,
        role_contains: Callable[[str, str], bool] | None = None,
        is_revoked: Callable[[Iterable[str]], bool] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        # None: the caller (the gateway, which knows the roles) checks the role chain itself.
        self._role_contains = role_contains
        self._is_revoked = is_revoked or (lambda ids: False)
        self._clock = clock

    def issue(self, identity: str, resource: str, role: str, ttl_s: float) -> str:
        if ttl_s <= 0:
            raise TokenError("ttl must be positive")
        body = TokenBody(
            identifier=secrets.token_hex(8),
            caveats=(
                f"{IDENTITY} = {_clean_identity(identity)}",
                f"{RESOURCE} = {_clean(resource)}",
                f"{ROLE} = {_clean(role)}",
                f"{EXPIRES} = {int(self._clock() + ttl_s)}",
            ),
        )
        return f"{body.encode()}.{_macaroon(body, key=self._key).signature}"

    def scram_password(self, user: str) -> str | None:
        """The password (signature) a SCRAM client must prove for this user name."""
        try:
            body = TokenBody.decode(user)
        except TokenError:
            return None
        return _macaroon(body, key=self._key).signature

    def authenticate(self, user: str, password: str, *, resource: str, client_ip: str) -> Credential:
        """Checks a token given as (body, signature) or as a whole token in `password`."""
        try:
            if password.startswith(PREFIX + "."):
                body_text, sig = split_token(password)
            else:
                body_text, sig = user, password
            body = TokenBody.decode(body_text)
        except TokenError as exc:
            raise AuthError(f"invalid credential: {exc}") from exc
        expected = _macaroon(body, key=self._key).signature
        if not hmac.compare_digest(expected.encode(), sig.strip().encode()):
            raise AuthError("invalid credential: bad signature")
        return self.credential_for(body, resource=resource, client_ip=client_ip)

    def credential_for(self, body: TokenBody, *, resource: str, client_ip: str) -> Credential:
        """Applies every caveat of an already verified body; each one only narrows."""
        try:
            fields = body.fields()
        except TokenError as exc:
            raise AuthError(f"invalid credential: {exc}") from exc
        try:
            return self._apply_caveats(body, fields, resource=resource, client_ip=client_ip)
        except ValueError as exc:
            raise AuthError("invalid credential: malformed condition") from exc

    def _apply_caveats(
        self, body: TokenBody, fields: list[tuple[str, str]], *, resource: str, client_ip: str
    ) -> Credential:
        identities, roles, token_ids = [], [], [body.identifier]
        expires_at, max_statements = None, None
        for key, value in fields:
            if key == IDENTITY:
                if PRINCIPAL_SEPARATOR in value:  # a chain could pass for another's
                    raise AuthError("invalid credential: malformed identity")
                identities.append(value)
            elif key == RESOURCE:
                if value != resource:
                    raise AuthError(f"credential is for resource {value!r}, not {resource!r}")
            elif key == ROLE:
                if roles and self._role_contains and not self._role_contains(roles[-1], value):
                    raise AuthError(f"credential widens role {roles[-1]!r} to {value!r}")
                roles.append(value)
            elif key == EXPIRES:
                expires_at = min(float(value), expires_at or float("inf"))
            elif key == TOKEN_ID:
                token_ids.append(value)
            elif key == MAX_STATEMENTS:
                max_statements = min(int(value), max_statements or int(value))
            elif key == CLIENT_CIDR:
                if ipaddress.ip_address(client_ip) not in ipaddress.ip_network(value):
                    raise AuthError(f"credential is not valid from {client_ip}")
            else:
                # Fail closed: a caveat this gateway does not understand is not satisfied.
                raise AuthError(f"credential carries an unknown condition {key!r}")
        if not identities or not roles or expires_at is None:
            raise AuthError("invalid credential: missing identity, role or expiry")
        if expires_at <= self._clock():
            raise AuthError("credential expired; ask for a new one (hoopctl token issue)")
        if self._is_revoked(token_ids):
            raise AuthError("credential revoked")
        return Credential(
            identity=identities[-1],
            resource=resource,
            role=roles[-1],
            token_id=token_ids[-1],
            chain=tuple(identities),
            token_ids=tuple(token_ids),
            roles=tuple(roles),
            expires_at=expires_at,
            max_statements=max_statements,
            narrowed_in_place=not principal_of(fields)[1],
        )
