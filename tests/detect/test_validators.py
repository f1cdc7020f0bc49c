"""Second-stage validators on their own: checksums, structure, key parsing."""

from __future__ import annotations

import base64
import json

from hoopctl.detect.validators import (
    Verdict,
    base62,
    check_base64_key,
    check_basic_auth,
    check_github,
    check_jwt,
    check_luhn,
    check_private_key,
    check_putty_key,
    github_checksum,
)
from tests.detect.tokens import github_token


def _b64url(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_github_checksum_is_base62_crc32_of_the_body() -> None:
    assert base62(0) == "000000"
    assert base62(61) == "00000z"
    assert base62(62) == "000010"
    token = github_token("ghp_", seed=41)
    assert github_checksum(token[4:34]) == token[-6:]
    assert check_github(token) is Verdict.OK
    assert check_github(github_token("gho_", seed=41, valid=False)) is Verdict.WEAK


def test_jwt_structure() -> None:
    header, payload = _b64url({"alg": "RS256", "typ": "JWT"}), _b64url({"sub": "ci", "exp": 1})
    assert check_jwt(f"{header}.{payload}.c2lnbmF0dXJlLWJ5dGVz") is Verdict.OK
    assert check_jwt(f"{_b64url({'alg': 'none'})}.{payload}.") is Verdict.WEAK
    assert check_jwt(f"{_b64url({'typ': 'JWT'})}.{payload}.c2ln") is Verdict.REJECT
    assert check_jwt(f"{header}.bm90IGpzb24.c2ln") is Verdict.REJECT
    assert check_jwt("eyJ.not.base64!") is Verdict.REJECT


def test_private_key_parsing() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    enc = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    ssh = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    assert check_private_key(pem.decode()) is Verdict.OK
    assert check_private_key(ssh.decode()) is Verdict.OK
    assert check_private_key(enc.decode()) is Verdict.WEAK
    truncated = pem.decode().splitlines()
    assert check_private_key("\n".join(truncated[:1] + ["A" * 64, "B" * 64] + truncated[-1:])) is Verdict.WEAK
    assert (
        check_private_key("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----")
        is Verdict.REJECT
    )


def test_luhn_base64_basic_auth_and_putty() -> None:
    assert check_luhn("4539 1488 0343 6467") is Verdict.OK
    assert check_luhn("4539 1488 0343 6468") is Verdict.REJECT
    assert check_base64_key(base64.b64encode(b"k" * 64).decode()) is Verdict.OK
    assert check_base64_key("not*base64") is Verdict.REJECT
    assert check_basic_auth(base64.b64encode(b"deploy:Zr8pL2qKv7Wm").decode()) is Verdict.OK
    assert check_basic_auth(base64.b64encode(b"no-colon-here").decode()) is Verdict.REJECT
    assert check_basic_auth(base64.b64encode(b"user:").decode()) is Verdict.REJECT
    assert check_putty_key("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n") is Verdict.OK
    assert check_putty_key("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: aes256-cbc\n") is Verdict.WEAK
