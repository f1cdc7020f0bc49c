"""What must never be reported: documented examples, placeholders, public material, hashes and ids."""

from __future__ import annotations

import pytest

from hoopctl.detect import Detector

DET = Detector.default()


def _ids(text: str, path: str = "file.txt") -> list[str]:
    return [m.rule_id for m in DET.scan(text.encode(), path)]


@pytest.mark.parametrize(
    "text",
    [
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
        "AWS_ACCESS_KEY_ID=AKIAI44QH8DHBEXAMPLE AWS_SECRET_ACCESS_KEY=je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
        "stripe.api_key = 'sk_test_4eC39HqLyjWDarjtT1zdp7dc'",
        "Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        "curl https://example.com/v1?access_token=Zk8qPm2vRt7wLx3N",
    ],
)
def test_documented_example_keys_are_not_reported(text: str) -> None:
    assert _ids(text) == []


@pytest.mark.parametrize(
    "text",
    [
        "password: <token>",
        "api_token: <your-api-token>",
        "password = ${DB_PASSWORD}",
        "DB_PASSWORD=$DB_PASSWORD",
        "token: ${{ secrets.GITHUB_TOKEN }}",
        "password: '{{ vault_db_password }}'",
        "password = changeme",
        "client_secret = your-client-secret-here",
        "api_key = xxxxxxxxxxxxxxxxxxxx",
        "GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "password: ********",
        "password: '****************'",
        'password = ""',
        "password=",
        "SECRET_KEY=your-token-here",
        "password: %(db_password)s",
        "token = REPLACE_ME_WITH_A_REAL_TOKEN",
    ],
)
def test_placeholders_are_not_reported(text: str) -> None:
    assert _ids(text) == []
    assert _ids(text, "/srv/app/.env") == []


@pytest.mark.parametrize(
    "text",
    [
        'password = os.environ["DB_PASSWORD"]',
        "password = os.getenv('DB_PASSWORD', '')",
        "password = settings.DATABASE_PASSWORD",
        "token = self.token",
        "const token = process.env.API_TOKEN;",
        "password = getpass.getpass('Password: ')",
        "api_key = config['api_key']",
        "def login(user: str, password: str) -> Token:",
        "if password == confirm_password:",
        "    password = request.form.get('password')",
        "self.secret_key = secret_key",
        "    self, private_key: ed25519.Ed25519PrivateKey, f_priv: _FragList",
        '"kadmin/dbutil", "kadmin/passwd", "kadmin/server", "lib/kadm5", and',
        "token = jwt.encode(payload, key, algorithm='HS256')",
        "TOKEN_URL = 'https://auth.internal/oauth/token'",
        "max_tokens = 4096",
        "password_min_length: 12",
        "secretName: billing-db-credentials",
        "DB_PASSWORD_FILE=/run/secrets/db_password",
        "password_hash = '$2b$12$KIXQJm1vZ1p5m3gYv9QG2eQ1nB3uL9yS7o0cK4dW6fH8jR2tP5aLe'",
    ],
)
def test_code_that_names_a_secret_is_not_reported(text: str) -> None:
    assert _ids(text, "app/settings.py") == []


@pytest.mark.parametrize(
    "text",
    [
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUWr1b7d0+XXYZxJ2qObOKBVQ5e7ebGNiKZKqP7MpZQP6M\n-----END CERTIFICATE-----\n",
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEF0ksa+HdPl12GcSdqjmzigVUOXu3\n-----END PUBLIC KEY-----\n",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBnXHqCwDTnLYLjsX/ywMEgkkxJrdjk9VZSXGkYhG8zS ci@build\n",
        "public_key: MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEF0ksa+HdPl12GcSdqjmzigVUOXu3\n",
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7vbqajDhA7bBXe+Qm0cYzmF0i3kVx9pN2 deploy@ci\n",
    ],
)
def test_public_keys_and_certificates_are_not_reported(text: str) -> None:
    assert _ids(text, "/home/x/.ssh/id_ed25519.pub") == []


@pytest.mark.parametrize(
    "text",
    [
        "commit_sha: 3f786850e387550fdab836ed7e6dc881de23001b",  # git SHA
        "token_digest = 3f786850e387550fdab836ed7e6dc881de23001b",
        "secret_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "password_md5 = 5f4dcc3b5aa765d61d8327deb882cf99",
        "api_key_checksum: d41d8cd98f00b204e9800998ecf8427e",
        "TOKEN=0f8fad5b-d9cb-469f-a165-70867728950e",  # UUID
        "request_token = 7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "commit_token: a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
    ],
)
def test_hashes_uuids_and_git_shas_are_not_reported(text: str) -> None:
    assert _ids(text) == []


def test_lockfile_integrity_hashes_are_not_reported() -> None:
    package_lock = (
        '{\n  "packages": {\n    "node_modules/left-pad": {\n      "version": "1.3.0",\n'
        '      "resolved": "https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz",\n'
        '      "integrity": "sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQjT+ta5+Ea7fNzUmxY/5jKh8wZ8pJvKBG4fOQ0kzWA2p3Q=="\n'
        "    }\n  }\n}\n"
    )
    yarn_lock = (
        'left-pad@^1.3.0:\n  version "1.3.0"\n  resolved "https://registry.yarnpkg.com/left-pad/-/left-pad-1.3.0.tgz#5b8a3a7765dfe001261dde915589e782f8c94d1e"\n'
        "  integrity sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQjT+ta5+Ea7fNzUmxY/5jKh8wZ8pJvKBG4fOQ0kzWA2p3Q==\n"
    )
    requirements = (
        "requests==2.31.0 \\\n"
        "    --hash=sha256:58cd2187c01e70e6e26505bca751777aa9f2ee0b7f4300988b709f44e013003f \\\n"
        "    --hash=sha256:942c5a758f98d790eaed1a29cb6eefc7ffb0d1cf7af05c3d2791656dbd6ad1e1\n"
    )
    assert _ids(package_lock, "package-lock.json") == []
    assert _ids(yarn_lock, "yarn.lock") == []
    assert _ids(requirements, "requirements.txt") == []


def test_ordinary_source_code_and_logs_are_quiet() -> None:
    source = '''
import os
from dataclasses import dataclass

TOKEN_HEADER = "Authorization"
PASSWORD_MIN = 12


@dataclass
class Settings:
    database_url: str = os.environ.get("DATABASE_URL", "postgres://localhost/app")
    secret_key: str = os.environ["SECRET_KEY"]
    api_token: str | None = None


def authenticate(username: str, password: str) -> bool:
    """Check a password against its stored hash."""
    stored = load_hash(username)
    return verify(password, stored)


def tokenize(text: str) -> list[str]:
    tokens = text.split()
    return [t for t in tokens if t]
'''
    log = (
        "2026-11-25T23:01:02Z INFO auth: token refreshed for user=alice expires_in=3600\n"
        "2026-11-25T23:01:03Z WARN auth: password authentication failed for user=bob from 10.0.0.7\n"
        "2026-11-25T23:01:04Z INFO http: GET /api/v1/tokens 200 12ms request_id=0f8fad5b-d9cb-469f-a165-70867728950e\n"
        "2026-11-25T23:01:05Z DEBUG db: connecting to postgres://app@db1.internal:5432/app\n"
    )
    assert _ids(source, "app/settings.py") == []
    assert _ids(log, "/var/log/app/app.log") == []


def test_aligned_columns_and_spaced_operators_still_match() -> None:
    text = 'db_password                          = "Lp9Wx2Kq7Mz4Rt"\napi_token :  Zk8qPm2vRt7wLx3NcY5b\n'
    assert _ids(text, "/srv/infra/prod.tfvars") == ["generic-password", "generic-token"]
