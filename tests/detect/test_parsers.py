"""Structured parsers on realistic files: the right values, the right lines, nothing else."""

from __future__ import annotations

import pytest

from hoopctl.detect import Detector
from hoopctl.detect.match import fingerprint
from hoopctl.detect.parsers import select_names

DET = Detector.default()


def _found(path: str, text: str) -> list[tuple[str, int, str]]:
    return [(m.rule_id, m.line, m.fingerprint) for m in DET.scan(text.encode(), path)]


@pytest.mark.parametrize(
    ("path", "parsers"),
    [
        ("/home/a/.pgpass", ["pgpass"]),
        ("/home/a/.netrc", ["netrc"]),
        ("/home/a/.git-credentials", ["git-credentials"]),
        ("/home/a/.config/git/credentials", ["git-credentials"]),
        ("/home/a/.aws/credentials", ["aws-credentials"]),
        ("/home/a/.kube/config", ["kubeconfig"]),
        ("/etc/kubernetes/admin.conf", ["kubeconfig"]),
        ("/home/a/.docker/config.json", ["docker-config"]),
        ("/home/a/.npmrc", ["npmrc"]),
        ("/home/a/.pypirc", ["pypirc"]),
        ("/root/.vault-token", ["vault-token"]),
        ("/srv/app/.env", ["dotenv"]),
        ("/srv/app/.env.production", ["dotenv"]),
        ("/etc/default/billing", ["dotenv"]),
        ("/home/a/.bash_history", ["shell-history"]),
        ("/home/a/.bashrc", ["dotenv"]),
        ("/home/a/.zshrc", ["dotenv"]),
        ("/etc/systemd/system/app.service", ["systemd-unit"]),
        ("/etc/systemd/system/app.service.d/override.conf", ["systemd-unit"]),
        ("/etc/gitlab-runner/config.toml", ["gitlab-runner"]),
        ("/opt/actions-runner/.credentials", ["github-runner"]),
        ("/srv/app/config.toml", []),
        ("/srv/app/main.py", []),
        ("", []),
    ],
)
def test_parsers_are_chosen_by_path(path: str, parsers: list[str]) -> None:
    assert select_names(path) == parsers


def test_pgpass_handles_escapes_comments_and_wildcards() -> None:
    text = "# backups\n*:*:*:replicator:Rp9\\:mK2\\\\vL7q\ndb1:5432:app:app\n\nlocalhost:5432:*:postgres:Xq4mN8pL2vRt\n"
    found = _found("/var/lib/postgresql/.pgpass", text)
    assert found == [
        ("pgpass-password", 2, fingerprint("Rp9\\:mK2\\\\vL7q")),
        ("pgpass-password", 5, fingerprint("Xq4mN8pL2vRt")),
    ]


def test_netrc_on_one_line_and_across_lines_and_macdef_ignored() -> None:
    text = (
        "machine a.internal login u1 password Lm3Qx8Vt2Rp\n"
        "machine b.internal\n    login u2\n    password\n        Zk7Wn4Pq9Hc\n"
        "macdef init\npassword notasecretreally\n\n"
    )
    found = _found("/home/u/.netrc", text)
    assert [(r, line) for r, line, _ in found] == [("netrc-password", 1), ("netrc-password", 5)]


def test_aws_credentials_profiles() -> None:
    text = (
        "[default]\naws_access_key_id = AKIAZPJAG3OL5DPH5I5U\n"
        "aws_secret_access_key = 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\n\n"
        "[legacy]\naws_access_key_id=AKIAIOSFODNN7EXAMPLE\naws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
    )
    ids = [(r, line) for r, line, _ in _found("/home/u/.aws/credentials", text)]
    assert ids == [("aws-access-key-id", 2), ("aws-secret-access-key", 3)]


def test_kubeconfig_token_key_and_password() -> None:
    text = """apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUM=
    server: https://10.0.0.1:6443
  name: prod
users:
- name: deployer
  user:
    token: kx7Pq2mLv9Rz4WcT8nYh3Bd6Jg1FsA0e
- name: admin
  user:
    client-certificate-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t
    client-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQpNSUlFb3dJQkFBS0NBUUVB
- name: basic
  user:
    username: admin
    password: "Rz4Wc7Pq2mLv9T"
"""
    ids = [(r, line) for r, line, _ in _found("/home/u/.kube/config", text)]
    assert ids == [("kubeconfig-token", 11), ("kubeconfig-client-key", 15), ("kubeconfig-password", 19)]


def test_docker_config_auths_and_identity_token() -> None:
    text = """{
  "auths": {
    "https://index.docker.io/v1/": {"auth": "Y2ktYm90OlZuN0tjMlJwOVF6NFd4"},
    "registry.acme.internal": {"auth": "ZGVwbG95OlpyOHBMMnFLdjdXbQ==", "identitytoken": "Pq7mK2xLv9Rz4WcT8nYh3Bd6Jg1"}
  },
  "credHelpers": {"gcr.io": "gcloud"}
}
"""
    found = _found("/root/.docker/config.json", text)
    assert [(r, line) for r, line, _ in found] == [
        ("docker-config-auth", 3),
        ("docker-config-auth", 4),
        ("docker-config-auth", 4),
    ]


def test_dotenv_names_quotes_comments_and_exports() -> None:
    text = (
        "# billing service\nAPP_ENV=production\nexport DB_PASSWORD='s3cr3t pass w0rd'\n"
        'STRIPE_WEBHOOK_SECRET="whsec_Pq7mK2xLv9Rz4WcT8nYh"  # rotated 2026-10\n'
        "REDIS_PASSWORD=Kq8vL2xP9mZt # inline comment\nSESSION_SECRET=\nLOG_LEVEL=debug\nAPI_KEY=${VAULT_API_KEY}\n"
    )
    found = _found("/srv/billing/.env", text)
    assert found == [
        ("dotenv-secret", 3, fingerprint("s3cr3t pass w0rd")),
        ("dotenv-secret", 4, fingerprint("whsec_Pq7mK2xLv9Rz4WcT8nYh")),
        ("dotenv-secret", 5, fingerprint("Kq8vL2xP9mZt")),
    ]


def test_shell_history_commands() -> None:
    text = (
        "cd /srv/billing\n"
        "export VAULT_ADDR=https://vault.internal:8200\n"
        "export GITLAB_TOKEN=Lv9Rz4WcT8nYh3Bd6J\n"
        "PGPASSWORD='Mq8pLz2Hv3Rk' pg_dump -h db1 -U app app > /tmp/app.sql\n"
        "mysqldump -u root -p'Xw7Kq2Lm9Rv' --all-databases\n"
        "mysql -u root -p billing\n"
        "psql -c \"ALTER USER report PASSWORD 'Tn6Vb3Kx8Qw'\"\n"
        "docker login -u ci -p Hq5Wm2Zr8Lx registry.acme.internal\n"
        "git push\n"
    )
    found = _found("/root/.bash_history", text)
    assert [(r, line) for r, line, _ in found] == [
        ("shell-history-secret", 3),
        ("shell-history-secret", 4),
        ("shell-history-secret", 5),
        ("shell-history-secret", 7),
        ("shell-history-secret", 8),
    ]
    assert found[1][2] == fingerprint("Mq8pLz2Hv3Rk")
    assert found[2][2] == fingerprint("Xw7Kq2Lm9Rv")


def test_systemd_environment_lines() -> None:
    text = (
        "[Unit]\nDescription=Billing worker\n\n[Service]\nUser=billing\n"
        'Environment="QUEUE=billing" "API_TOKEN=Kz3Wm8pQ2vRx9Lt5"\n'
        "Environment=DB_PASSWORD=Tr6Yq1Nm4Bx8 LOG=info\n"
        "EnvironmentFile=/etc/billing/env\nLoadCredential=token:/etc/billing/token\n"
        "ExecStart=/opt/billing/worker --token-file %d/token\n"
    )
    found = _found("/etc/systemd/system/billing-worker.service", text)
    assert found == [
        ("systemd-environment-secret", 6, fingerprint("Kz3Wm8pQ2vRx9Lt5")),
        ("systemd-environment-secret", 7, fingerprint("Tr6Yq1Nm4Bx8")),
    ]


def test_gitlab_runner_config_tokens() -> None:
    text = (
        'concurrent = 4\ncheck_interval = 0\n\n[[runners]]\n  name = "build01"\n  url = "https://gitlab.acme.io/"\n'
        '  id = 12\n  token = "glrt-J_Bq8F80ymm3T207gmhZ"\n  executor = "docker"\n  [runners.cache]\n'
        '    [runners.cache.s3]\n      AccessKey = "AKIAZPJAG3OL5DPH5I5U"\n      SecretKey = "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"\n'
    )
    found = _found("/etc/gitlab-runner/config.toml", text)
    assert [(r, line) for r, line, _ in found] == [
        ("gitlab-runner-token", 8),
        ("aws-access-key-id", 12),
        ("gitlab-runner-config", 13),
    ]


def test_git_credentials_and_vault_token_files() -> None:
    found = _found(
        "/home/u/.git-credentials", "https://u:Tq4mZp8Lw2Xv@gitlab.acme.io\nhttps://gitlab.acme.io\n"
    )
    assert found == [("git-credentials-password", 1, fingerprint("Tq4mZp8Lw2Xv"))]
    found = _found("/root/.vault-token", "hvs.CAESIJx8pQ2mLr7Kz4Wn9Tc3Yb6HdFsA0eUiOyTrLq8Zp2mVx7Rt4K\n")
    assert [r for r, _, _ in found] == ["vault-token"]


def test_same_text_outside_its_path_is_left_to_the_generic_rules() -> None:
    text = "*:*:*:replicator:Rp9mK2vL7q\n"
    assert _found("/home/u/.pgpass", text)
    assert _found("/home/u/notes.txt", text) == []


def test_shell_rc_exports() -> None:
    text = (
        '# ~/.bashrc\n[ -z "$PS1" ] && return\nexport PATH=$HOME/bin:$PATH\nexport HISTCONTROL=ignoreboth\n'
        "export PASSWORD_STORE_DIR=~/.password-store\nexport JIRA_API_TOKEN=Wm3pQ9vXr2Lk8TzYc5Nh\n"
        "alias k=kubectl\nexport GPG_TTY=$(tty)\n"
    )
    found = _found("/home/u/.bashrc", text)
    assert found == [("dotenv-secret", 6, fingerprint("Wm3pQ9vXr2Lk8TzYc5Nh"))]
