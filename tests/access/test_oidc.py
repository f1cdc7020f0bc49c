"""CI OIDC tokens, signed by keys the suite generates, served as a JWKS file and over HTTP."""

import http.server
import json
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from hoopctl.access.oidc import OIDCAuthority, issuers_from_config
from hoopctl.access.tokens import AuthError

ISSUER, AUD = "https://gitlab.test", "hoopctl"


@pytest.fixture(scope="module")
def keys():
    return {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048) for kid in ("k1", "rogue")}


def jwks(keys, *kids):
    out = []
    for kid in kids:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys[kid].public_key()))
        out.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
    return json.dumps({"keys": out})


def ci_token(keys, kid="k1", **overrides):
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUD,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "sub": "project_path:infra/db:ref_type:branch:ref:main",
        "project_path": "infra/db",
        "ref": "main",
        "job_id": "4242",
        "jti": "j-1",
    }
    claims.update(overrides)
    return jwt.encode(claims, keys[kid], algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture
def authority(keys, tmp_path):
    (tmp_path / "jwks.json").write_text(jwks(keys, "k1"))
    config = [
        {
            "issuer": ISSUER,
            "audience": AUD,
            "jwks_file": str(tmp_path / "jwks.json"),
            "identity": "gitlab:{project_path}@{ref}#{job_id}",
            "rules": [
                {"match": {"project_path": "infra/db", "ref": "main"}, "role": "writer", "resource": "appdb"},
                {"match": {"project_path": "infra/*"}, "role": "reader"},
            ],
        }
    ]
    return OIDCAuthority(issuers_from_config(config))


def test_right_token_maps_to_the_configured_identity_and_role(keys, authority):
    cred = authority.authenticate(ci_token(keys), resource="appdb")
    assert (cred.identity, cred.role) == ("gitlab:infra/db@main#4242", "writer")
    other_branch = authority.authenticate(ci_token(keys, ref="feature-x"), resource="appdb")
    assert other_branch.role == "reader"


@pytest.mark.parametrize(
    "overrides, kid, why",
    [
        ({"aud": "someone-else"}, "k1", "audience"),
        ({"iss": "https://evil.test"}, "k1", "issuer"),
        ({}, "rogue", "signature"),
        ({"exp": int(time.time()) - 600, "iat": int(time.time()) - 900}, "k1", "expired"),
        ({"nbf": int(time.time()) + 600}, "k1", "not yet valid"),
        ({"project_path": "web/frontend"}, "k1", "no matching rule"),
        ({"ref": "main>helper"}, "k1", "an identity that could pass for a nested agent's chain"),
    ],
)
def test_wrong_token_is_refused(keys, authority, overrides, kid, why):
    with pytest.raises(AuthError):
        authority.authenticate(ci_token(keys, kid=kid, **overrides), resource="appdb")


def test_jwks_fetched_over_http_and_cached(keys):
    hits = []
    body = jwks(keys, "k1").encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/jwks"
        cfg = [
            {"issuer": ISSUER, "audience": AUD, "jwks_url": url, "rules": [{"match": {}, "role": "reader"}]}
        ]
        auth = OIDCAuthority(issuers_from_config(cfg))
        for _ in range(3):
            assert auth.authenticate(ci_token(keys), resource="appdb").role == "reader"
        assert len(hits) == 1
    finally:
        server.shutdown()


def test_bad_config_names_the_entry_and_key():
    with pytest.raises(ValueError, match=r"oidc\[0\]: required key 'audience'"):
        issuers_from_config([{"issuer": ISSUER, "jwks_file": "x", "rules": [{"role": "r"}]}])
