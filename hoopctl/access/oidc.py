"""CI providers' OIDC ID tokens as gateway credentials (verified with PyJWT).

A CI job presents its provider's ID token (a JWT) as its password. The gateway checks
the signature against the issuer's JWKS (a local file, or a URL fetched and cached),
`iss`, `aud`, `exp` and `nbf`, then maps claims (repository, ref, environment, job)
to an identity and a role by configured rules. No rule matching means no access.
"""

from __future__ import annotations

import fnmatch
import json
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from hoopctl.access.tokens import PRINCIPAL_SEPARATOR, AuthError, Credential

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"]


def looks_like_jwt(text: str) -> bool:
    return text.startswith("eyJ") and text.count(".") == 2


@dataclass(frozen=True)
class ClaimRule:
    """`match` maps claim names to glob patterns; all must hold."""

    match: dict[str, str]
    role: str
    resource: str | None = None

    def applies(self, claims: dict[str, Any], resource: str) -> bool:
        if self.resource and self.resource != resource:
            return False
        for name, pattern in self.match.items():
            value = claims.get(name)
            if not isinstance(value, (str, int)) or not fnmatch.fnmatchcase(str(value), pattern):
                return False
        return True


@dataclass
class OIDCIssuer:
    issuer: str
    audience: str
    identity: str  # a template over claims, e.g. "gitlab:{project_path}@{ref}#{job_id}"
    rules: list[ClaimRule]
    jwks_file: Path | None = None
    jwks_url: str | None = None
    cache_ttl_s: float = 300.0
    leeway_s: float = 30.0
    max_lifetime_s: float = 3600.0
    clock: Callable[[], float] = time.time
    _jwk_client: Any = field(default=None, repr=False)
    _file_keys: Any = field(default=None, repr=False)
    _file_loaded_at: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        if bool(self.jwks_file) == bool(self.jwks_url):
            raise ValueError("exactly one of jwks_file and jwks_url is needed")
        fields = {name for _, name, _, _ in string.Formatter().parse(self.identity) if name}
        if not fields:
            raise ValueError("identity must name at least one claim, e.g. '{sub}'")

    def _signing_key(self, token: str) -> Any:
        if self.jwks_url:
            if self._jwk_client is None:
                self._jwk_client = jwt.PyJWKClient(
                    self.jwks_url, cache_keys=True, lifespan=int(self.cache_ttl_s)
                )
            return self._jwk_client.get_signing_key_from_jwt(token).key
        now = time.monotonic()
        if self._file_keys is None or now - self._file_loaded_at > self.cache_ttl_s:
            self._file_keys = jwt.PyJWKSet.from_json(Path(self.jwks_file).read_text())
            self._file_loaded_at = now
        kid = jwt.get_unverified_header(token).get("kid")
        for key in self._file_keys.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise AuthError("OIDC token signed by an unknown key")

    def verify(self, token: str) -> dict[str, Any]:
        try:
            key = self._signing_key(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"OIDC token refused: {exc}") from exc
        except (OSError, ValueError) as exc:
            raise AuthError(f"OIDC keys unavailable for {self.issuer}") from exc
        if claims["exp"] - claims["iat"] > self.max_lifetime_s:
            raise AuthError("OIDC token lives too long to be a CI job token")
        return claims


class OIDCAuthority:
    """Picks the issuer by the token's unverified `iss`, then verifies everything."""

    def __init__(
        self, issuers: list[OIDCIssuer], *, is_revoked: Callable[[list[str]], bool] | None = None
    ) -> None:
        self.issuers = {i.issuer: i for i in issuers}
        self._is_revoked = is_revoked or (lambda ids: False)

    def authenticate(self, token: str, *, resource: str) -> Credential:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError("OIDC token refused: malformed") from exc
        issuer = self.issuers.get(unverified.get("iss"))
        if issuer is None:
            raise AuthError("OIDC token refused: unknown issuer")
        claims = issuer.verify(token)
        rule = next((r for r in issuer.rules if r.applies(claims, resource)), None)
        if rule is None:
            raise AuthError(f"no access rule for this CI job on resource {resource!r}")
        try:
            identity = issuer.identity.format_map(
                {k: v for k, v in claims.items() if isinstance(v, (str, int))}
            )
        except KeyError as exc:
            raise AuthError(f"OIDC token lacks the claim {exc.args[0]!r} the identity needs") from exc
        if PRINCIPAL_SEPARATOR in identity:  # a claim could make it pass for a nested agent's chain
            raise AuthError(f"OIDC identity may not contain {PRINCIPAL_SEPARATOR!r}")
        token_id = f"oidc:{claims.get('jti') or claims.get('sub')}"
        if self._is_revoked([token_id]):
            raise AuthError("credential revoked")
        return Credential(
            identity=identity,
            resource=resource,
            role=rule.role,
            token_id=token_id,
            chain=(identity,),
            token_ids=(token_id,),
            roles=(rule.role,),
            expires_at=float(claims["exp"]),
        )


def issuers_from_config(entries: list[dict[str, Any]]) -> list[OIDCIssuer]:
    """From the gateway config's `oidc:` list; ValueError names the entry and key."""
    out = []
    for n, entry in enumerate(entries):
        where = f"oidc[{n}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping")
        try:
            rules = [
                ClaimRule(match=dict(r.get("match") or {}), role=str(r["role"]), resource=r.get("resource"))
                for r in entry.get("rules") or []
            ]
            if not rules:
                raise ValueError("at least one rule is needed")
            out.append(
                OIDCIssuer(
                    issuer=str(entry["issuer"]),
                    audience=str(entry["audience"]),
                    identity=str(entry.get("identity", "{sub}")),
                    rules=rules,
                    jwks_file=Path(entry["jwks_file"]) if entry.get("jwks_file") else None,
                    jwks_url=entry.get("jwks_url"),
                    cache_ttl_s=float(entry.get("cache_ttl_s", 300)),
                )
            )
        except KeyError as exc:
            raise ValueError(f"{where}: required key {exc.args[0]!r} is missing") from exc
        except (TypeError, ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"{where}: {exc}") from exc
    return out
