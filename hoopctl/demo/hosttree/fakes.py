"""Fake credentials in their real formats, made from a seeded random generator.

Written from the providers' documented formats, independently of the detection rules and their
examples, so that measuring the scanner against a tree planted with these is honest. Nothing here
is a live credential: the bodies are random. Private keys are real key material (so a parser
accepts them) derived deterministically from the seed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import string
import struct
import zlib
from functools import lru_cache

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "-_"
B64 = ALNUM + "+/"
HEX = "0123456789abcdef"
AWS_ID = string.ascii_uppercase + "234567"


def rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choices(alphabet, k=n))


def b62(n: int, width: int = 6) -> str:
    out = ""
    while n:
        n, r = divmod(n, 62)
        out = BASE62[r] + out
    return out.rjust(width, "0")


def checksummed(rng: random.Random, prefix: str) -> str:
    """GitHub/npm token: prefix, 30 base62 characters, base62 CRC32 of those 30 (6 characters)."""
    body = rand(rng, BASE62, 30)
    return prefix + body + b62(zlib.crc32(body.encode()))


def password(rng: random.Random, n: int | None = None) -> str:
    """A strong generated password: letters, digits and a few symbols, at least one of each class."""
    n = n or rng.randint(16, 28)
    core = rand(rng, ALNUM, n - 3)
    pos = sorted(rng.sample(range(n - 3), 3))
    chars = list(core)
    for p, c in zip(
        pos,
        (rng.choice("!#%^*-_+=.~"), rng.choice(string.digits), rng.choice(string.ascii_uppercase)),
        strict=True,
    ):
        chars.insert(p, c)
    return "".join(chars)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- token formats ------------------------------------------------------------------------------


def aws_key_id(rng: random.Random) -> str:
    return rng.choice(("AKIA", "AKIA", "ASIA")) + rand(rng, AWS_ID, 16)


def aws_secret(rng: random.Random) -> str:
    return rand(rng, B64, 40)


def github(rng: random.Random, kind: str = "ghp") -> str:
    return checksummed(rng, kind + "_")


def github_fine_grained(rng: random.Random) -> str:
    return (
        "github_pat_"
        + "11"
        + rand(rng, string.ascii_uppercase + string.digits, 20)
        + "_"
        + rand(rng, ALNUM, 59)
    )


def gitlab(rng: random.Random, prefix: str = "glpat-") -> str:
    return prefix + rand(rng, URLSAFE, 20)


def slack_bot(rng: random.Random) -> str:
    return f"xoxb-{rand(rng, string.digits, 11)}-{rand(rng, string.digits, 13)}-{rand(rng, ALNUM, 24)}"


def slack_user(rng: random.Random) -> str:
    d = string.digits
    return f"xoxp-{rand(rng, d, 11)}-{rand(rng, d, 12)}-{rand(rng, d, 13)}-{rand(rng, HEX, 32)}"


def slack_webhook(rng: random.Random) -> str:
    up = string.ascii_uppercase + string.digits
    return (
        f"https://hooks.slack.com/services/T{rand(rng, up, 10)}/B{rand(rng, up, 10)}/{rand(rng, ALNUM, 24)}"
    )


def google_api_key(rng: random.Random) -> str:
    return "AIza" + rand(rng, URLSAFE, 35)


def azure_storage_key(rng: random.Random) -> str:
    return base64.b64encode(rng.randbytes(64)).decode()


def stripe(rng: random.Random) -> str:
    return rng.choice(("sk_live_", "rk_live_")) + "51" + rand(rng, ALNUM, rng.choice((22, 97)))


def sendgrid(rng: random.Random) -> str:
    return f"SG.{rand(rng, URLSAFE, 22)}.{rand(rng, URLSAFE, 43)}"


def twilio_api_key(rng: random.Random) -> str:
    return "SK" + rand(rng, HEX, 32)


def twilio_auth_token(rng: random.Random) -> str:
    return rand(rng, HEX, 32)


def npm(rng: random.Random) -> str:
    return checksummed(rng, "npm_")


def pypi(rng: random.Random) -> str:
    return "pypi-AgEIcHlwaS5vcmc" + b64url(rng.randbytes(rng.randint(100, 140)))


def dockerhub(rng: random.Random) -> str:
    return "dckr_pat_" + rand(rng, URLSAFE, 27)


def vault(rng: random.Random) -> str:
    return "hvs." + rng.choice((rand(rng, ALNUM, 24), "CAESI" + rand(rng, URLSAFE, 86)))


def terraform(rng: random.Random) -> str:
    return f"{rand(rng, ALNUM, 14)}.atlasv1.{rand(rng, ALNUM, 67)}"


def heroku(rng: random.Random) -> str:
    return "HRKU-AA" + rand(rng, URLSAFE, 58)


def openai(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return "sk-" + rand(rng, ALNUM, 20) + "T3BlbkFJ" + rand(rng, ALNUM, 20)
    return "sk-proj-" + rand(rng, URLSAFE, 74) + "T3BlbkFJ" + rand(rng, URLSAFE, 74)


def anthropic(rng: random.Random) -> str:
    return "sk-ant-api03-" + rand(rng, URLSAFE, 93) + "AA"


def jwt(rng: random.Random, issuer: str = "https://auth.internal.example.net") -> str:
    """A signed HS256 JWT with a plausible payload (structure valid, signature correct)."""
    header = {"alg": "HS256", "typ": "JWT"}
    iat = 1_700_000_000 + rng.randint(0, 50_000_000)
    payload = {
        "iss": issuer,
        "sub": f"svc-{rand(rng, string.ascii_lowercase, 6)}",
        "aud": "api",
        "iat": iat,
        "exp": iat + 3600 * rng.choice((1, 24, 24 * 365)),
        "scope": rng.choice(("read write", "admin", "deploy")),
    }
    signing = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(payload, separators=(",", ":")).encode())
    )
    sig = hmac.new(rng.randbytes(32), signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64url(sig)


# -- private keys -------------------------------------------------------------------------------


def _probable_prime(rng: random.Random, bits: int) -> int:
    small = (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97)
    while True:
        n = rng.getrandbits(bits) | (1 << (bits - 1)) | (1 << (bits - 2)) | 1
        if any(n % p == 0 for p in small):
            continue
        d, s = n - 1, 0
        while d % 2 == 0:
            d //= 2
            s += 1
        for _ in range(24):
            x = pow(rng.randrange(2, n - 2), d, n)
            if x in (1, n - 1):
                continue
            for _ in range(s - 1):
                x = pow(x, 2, n)
                if x == n - 1:
                    break
            else:
                break
        else:
            return n


@lru_cache(maxsize=16)
def rsa_key(seed: int, bits: int):  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric import rsa

    rng = random.Random(seed)
    e = 65537
    while True:
        p, q = _probable_prime(rng, bits // 2), _probable_prime(rng, bits // 2)
        phi = (p - 1) * (q - 1)
        if p != q and phi % e:
            break
    d = pow(e, -1, phi)
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), rsa.RSAPublicNumbers(e, p * q)
    )
    return numbers.private_key()


def _ssh_string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _wrap(body: bytes, width: int = 64) -> str:
    text = base64.b64encode(body).decode()
    return "\n".join(text[i : i + width] for i in range(0, len(text), width))


def openssh_ed25519(rng: random.Random, comment: str, encrypted: bool = False) -> tuple[str, str]:
    """(private key in openssh-key-v1 format, public key line). Encrypted keys get a random body."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = rng.randbytes(32)
    pub = (
        Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    pub_blob = _ssh_string(b"ssh-ed25519") + _ssh_string(pub)
    check = rng.randbytes(4)
    priv = check + check + pub_blob + _ssh_string(seed + pub) + _ssh_string(comment.encode())
    if encrypted:
        cipher, kdf = b"aes256-ctr", b"bcrypt"
        kdfopts = _ssh_string(rng.randbytes(16)) + struct.pack(">I", 16)
        pad_to = 16
    else:
        cipher, kdf, kdfopts, pad_to = b"none", b"none", b"", 8
    priv += bytes(range(1, 1 + (-len(priv)) % pad_to))
    if encrypted:
        priv = rng.randbytes(len(priv))
    blob = (
        b"openssh-key-v1\0"
        + _ssh_string(cipher)
        + _ssh_string(kdf)
        + _ssh_string(kdfopts)
        + struct.pack(">I", 1)
        + _ssh_string(pub_blob)
        + _ssh_string(priv)
    )
    text = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{_wrap(blob, 70)}\n-----END OPENSSH PRIVATE KEY-----\n"
    return text, f"ssh-ed25519 {base64.b64encode(pub_blob).decode()} {comment}"


def rsa_pem(seed: int, bits: int = 2048, pkcs8: bool = False) -> tuple[str, str]:
    """(PKCS#1 or PKCS#8 PEM private key, OpenSSH public key line) for an RSA key from `seed`."""
    from cryptography.hazmat.primitives import serialization

    key = rsa_key(seed, bits)
    fmt = serialization.PrivateFormat.PKCS8 if pkcs8 else serialization.PrivateFormat.TraditionalOpenSSL
    pem = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()
    pub = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return pem, pub


def ec_pem(rng: random.Random) -> tuple[str, str]:
    """(SEC1 'EC PRIVATE KEY' PEM, PEM public key) for a P-256 key derived from the generator."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.derive_private_key(rng.randrange(1, 2**255), ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    pub = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return pem, pub


def encrypted_rsa_pem(seed: int, passphrase: bytes, rng: random.Random) -> str:
    """Legacy OpenSSL encrypted PEM (Proc-Type/DEK-Info, AES-128-CBC, EVP_BytesToKey), deterministic."""
    from cryptography.hazmat.primitives import padding, serialization
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    der = rsa_key(seed, 2048).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    iv = rng.randbytes(16)
    key = hashlib.md5(passphrase + iv[:8], usedforsecurity=False).digest()  # OpenSSL's legacy KDF
    padder = padding.PKCS7(128).padder()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    body = enc.update(padder.update(der) + padder.finalize()) + enc.finalize()
    return (
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n"
        f"DEK-Info: AES-128-CBC,{iv.hex().upper()}\n\n{_wrap(body)}\n-----END RSA PRIVATE KEY-----\n"
    )


def putty_ed25519(rng: random.Random, comment: str) -> str:
    """An unencrypted PuTTY-User-Key-File-3 with a correct MAC."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = rng.randbytes(32)
    pub = (
        Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    pub_blob = _ssh_string(b"ssh-ed25519") + _ssh_string(pub)
    priv_blob = _ssh_string(seed)
    mac_data = b"".join(
        _ssh_string(x) for x in (b"ssh-ed25519", b"none", comment.encode(), pub_blob, priv_blob)
    )
    mac = hmac.new(b"", mac_data, hashlib.sha256).hexdigest()

    def lines(b: bytes) -> list[str]:
        t = base64.b64encode(b).decode()
        return [t[i : i + 64] for i in range(0, len(t), 64)]

    pl, vl = lines(pub_blob), lines(priv_blob)
    return "\n".join(
        [
            "PuTTY-User-Key-File-3: ssh-ed25519",
            "Encryption: none",
            f"Comment: {comment}",
            f"Public-Lines: {len(pl)}",
            *pl,
            f"Private-Lines: {len(vl)}",
            *vl,
            f"Private-MAC: {mac}",
            "",
        ]
    )


def certificate(rng: random.Random, cn: str) -> str:
    """A self-signed Ed25519 certificate (deterministic signature): public material, a decoy."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.x509.oid import NameOID

    key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(days=rng.randint(0, 300))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(rng.getrandbits(64) | 1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=825))
        .sign(key, None)
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()
