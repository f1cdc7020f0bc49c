"""Realistic files a host holds, each with the exact (line, rule) findings expected, no more, no less.

Independent of the generated benchmark tree: hand-written files in the shapes people really write
(framework settings, CI configs, manifests, lockfiles, logs), mixing credentials with the look-alikes
around them.
"""

from __future__ import annotations

import pytest

from hoopctl.detect import Detector
from tests.detect.tokens import github_token

DET = Detector.default()
GH = github_token("ghp_", seed=21)
NPM = github_token("npm_", seed=22)

CASES: list[tuple[str, str, set[tuple[int, str]]]] = [
    (
        "/var/www/html/wp-config.php",
        """<?php
define( 'DB_NAME', 'wordpress' );
define( 'DB_USER', 'wp' );
define( 'DB_PASSWORD', 'Xq3#Lm9vR2kZp7Wt' );
define( 'DB_HOST', 'localhost' );
define( 'AUTH_KEY',         'put your unique phrase here' );
$table_prefix = 'wp_';
""",
        {(4, "generic-php-define")},
    ),
    (
        "/srv/shop/shop/settings.py",
        """import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = 'django-insecure-8#k2v!m@q9x^r7t&w3z(5p)l1n$b6c*h0j4f'
DEBUG = False
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "shop",
        "USER": "shop",
        "PASSWORD": os.environ["SHOP_DB_PASSWORD"],
        "HOST": "db1.internal",
    }
}
AUTH_PASSWORD_VALIDATORS = [{"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"}]
EMAIL_HOST_PASSWORD = "Rk7Wx3Mq8pLz2Hv"
""",
        {(5, "generic-secret"), (17, "generic-password")},
    ),
    (
        "/opt/app/config/application.properties",
        """server.port=8080
spring.datasource.url=jdbc:postgresql://db1.internal:5432/orders
spring.datasource.username=orders
spring.datasource.password=Tr6Yq1Nm4Bx8Lp
spring.jpa.hibernate.ddl-auto=validate
management.endpoints.web.exposure.include=health,info
app.jwt.secret=${JWT_SECRET}
""",
        {(4, "generic-password")},
    ),
    (
        "/srv/stack/docker-compose.yml",
        f"""services:
  db:
    image: postgres:15
    environment:
      - POSTGRES_PASSWORD=Vn7Kc2Rp9Qz4
      - POSTGRES_USER=app
  app:
    image: registry.acme.internal/app:1.4.2@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    environment:
      DATABASE_URL: postgres://app:Vn7Kc2Rp9Qz4@db:5432/app
      GITHUB_TOKEN: {GH}
      SENTRY_DSN: ${{SENTRY_DSN}}
""",
        {(5, "generic-password"), (10, "postgres-url-password"), (11, "github-pat-classic")},
    ),
    (
        "/srv/k8s/db-secret.yaml",
        """apiVersion: v1
kind: Secret
metadata:
  name: billing-db
type: Opaque
data:
  password: S3E4dkwyeFA5bVp0UXc=
  username: YmlsbGluZw==
""",
        {(7, "generic-password")},
    ),
    (
        "/home/ops/src/infra/.git/config",
        """[core]
\trepositoryformatversion = 0
[remote "origin"]
\turl = https://ops-bot:Hq5Wm2Zr8LxT@git.acme.internal/infra/ansible.git
\tfetch = +refs/heads/*:refs/remotes/origin/*
[remote "mirror"]
\turl = git@github.com:acme/ansible.git
""",
        {(4, "url-basic-auth")},
    ),
    (
        "/srv/ci/.github/workflows/deploy.yml",
        """name: deploy
on: [push]
jobs:
  deploy:
    runs-on: self-hosted
    steps:
      - uses: actions/checkout@b4ffde65f46336ab88eb53be808477a3936bae11
      - run: ./deploy.sh
        env:
          API_TOKEN: ${{ secrets.API_TOKEN }}
          DB_PASSWORD: ${{ secrets.DB_PASSWORD }}
""",
        set(),
    ),
    (
        "/home/dev/app/package-lock.json",
        """{
  "name": "app",
  "lockfileVersion": 3,
  "packages": {
    "node_modules/jsonwebtoken": {
      "version": "9.0.2",
      "resolved": "https://registry.npmjs.org/jsonwebtoken/-/jsonwebtoken-9.0.2.tgz",
      "integrity": "sha512-PRp66vJ865SSqOlgqS8hujT5U4AOgMfhrwYIuIhfKaoSCZcirrmASQr8CX7cUg+RMih+hgznrjp99o+W4pJLHQ=="
    },
    "node_modules/passport-local": {
      "version": "1.0.0",
      "integrity": "sha1-H+YyaMkudWBmJkN+O5BmYsFbpu4="
    }
  }
}
""",
        set(),
    ),
    (
        "/home/dev/app/go.sum",
        """golang.org/x/crypto v0.17.0 h1:r8bRNjWL3GshPW3gkd+RpvzWrZAwPS49OmTGZ/uhM4k=
golang.org/x/crypto v0.17.0/go.mod h1:gCAAfMLgwOJRpTjQ2zCCt2OcSfYMTeZVSRtQlPC7Nq4=
github.com/golang-jwt/jwt/v5 v5.2.0 h1:d/ix8ftRUorsN+5eMIlF4T6J8CAt9rch3My2winC1Jw=
""",
        set(),
    ),
    (
        "/home/dev/.npmrc",
        f"""registry=https://registry.npmjs.org/
//registry.npmjs.org/:_authToken={NPM}
//npm.acme.internal/:_auth=ZGVwbG95OlpyOHBMMnFLdjdXbQ==
""",
        {(2, "npm-token"), (3, "npmrc-auth")},
    ),
    (
        "/etc/nginx/.htpasswd",
        "admin:$apr1$Vf1fZ2x3$Qm8pL2vR7kZt9WxY4nC1b/\nops:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n",
        set(),
    ),
    (
        "/home/ops/.ssh/known_hosts",
        "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
        "|1|Kq8vL2xP9mZt4Wc=|Zr8pL2qKv7Wm3Nb= ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY=\n",
        set(),
    ),
    (
        "/var/log/nginx/access.log",
        '10.0.0.7 - - [25/Nov/2026:10:00:01 +0000] "GET /api/v1/items?page=2 HTTP/1.1" 200 512 "-" "curl/8.5"\n'
        '10.0.0.8 - - [25/Nov/2026:10:00:02 +0000] "GET /oauth/callback?code=4/0AX4XfWh&state=9f2b HTTP/1.1" 302 0\n'
        '10.0.0.9 - - [25/Nov/2026:10:00:03 +0000] "GET /export?access_token=Zk8qPm2vRt7wLx3NcY5b HTTP/1.1" 200 9\n',
        {(3, "generic-token")},
    ),
    (
        "/srv/infra/terraform.tfvars",
        """region        = "eu-west-1"
instance_type = "t3.small"
db_password   = "Lp9Wx2Kq7Mz4Rt"
ami_id        = "ami-0c55b159cbfafe1f0"
""",
        {(3, "generic-password")},
    ),
    (
        "/srv/infra/group_vars/all/vault.yml",
        """db_user: app
db_password: "{{ vault_db_password }}"
api_token: !vault |
          $ANSIBLE_VAULT;1.1;AES256
          62313365396662343061393464336163383764373764613633653634306231386433626436623361
""",
        set(),
    ),
    (
        "/home/dev/app/tests/test_login.py",
        """import pytest


def test_rejects_wrong_password(client):
    response = client.post("/login", data={"username": "alice", "password": "wrong"})
    assert response.status_code == 401


def test_hash_roundtrip():
    hashed = hash_password("correct horse battery staple")
    assert verify_password("correct horse battery staple", hashed)
""",
        set(),
    ),
    (
        "/home/dev/.pip/pip.conf",
        "[global]\nindex-url = https://deploy:Kq8vL2xP9mZt@nexus.acme.internal/repository/pypi/simple\ntimeout = 60\n",
        {(2, "url-basic-auth")},
    ),
]


@pytest.mark.parametrize(("path", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_realistic_file_gives_exactly_the_expected_findings(path: str, text: str, expected: set) -> None:
    found = {(m.line, m.rule_id) for m in DET.scan(text.encode(), path)}
    assert found == expected
