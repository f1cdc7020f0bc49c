"""A labeled tree that looks like a host, for tests, the demo and the benchmark.

`generate(root, seed=..., size_mb=...)` writes home directories with their dotfiles, /srv projects,
/tmp and /var/tmp leftovers, /etc units and runner configs, logs and bulk source code, and plants
fake credentials of many kinds at known (path, line) positions, beside decoys a scanner must not
report (documented example keys, placeholders, public keys, certificates, hashes, UUIDs, commit
ids, lockfile integrity hashes, passwords read from the environment). The same seed gives the same
tree, byte for byte. `Labels.score(findings)` measures precision and recall against the plants.
"""

from __future__ import annotations

import base64
import json
import os
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hoopctl.demo.hosttree import fakes
from hoopctl.demo.hosttree.filler import Filler


@dataclass(frozen=True, slots=True)
class Label:
    """A planted credential: file (relative to the root), first and last line, kind, and the value."""

    path: str
    line: int
    end_line: int
    type: str
    secret: str


@dataclass(frozen=True, slots=True)
class Decoy:
    """Something that looks like a credential and is not: a scanner reporting it is a false positive."""

    path: str
    line: int
    kind: str


@dataclass(frozen=True, slots=True)
class Score:
    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float
    recall: float
    missed: tuple[Label, ...]
    spurious: tuple[tuple[str, int, str], ...]  # (path, line, decoy kind or "filler")
    recall_by_type: dict[str, tuple[int, int]]  # type -> (found, planted)


@dataclass(frozen=True)
class Labels:
    root: Path
    secrets: tuple[Label, ...]
    decoys: tuple[Decoy, ...]
    files: int
    bytes: int
    #: Lines a scanner may report or not without being wrong (identifiers kept in credential files).
    neutral: tuple[Decoy, ...] = ()

    def types(self) -> set[str]:
        return {s.type for s in self.secrets}

    def score(self, findings: Iterable[object]) -> Score:
        """Match findings (objects with .path and .line, or (path, line) pairs) to the labels.

        A finding is a true positive when it lies on a labeled line range of the same file;
        several findings on one line count once.
        """
        root = str(self.root).rstrip("/") + "/"
        by_path: dict[str, list[Label]] = {}
        for s in self.secrets:
            by_path.setdefault(s.path, []).append(s)
        decoys = {(d.path, d.line): d.kind for d in self.decoys}
        neutral = {(d.path, d.line) for d in self.neutral}
        seen: set[tuple[str, int]] = set()
        hit: set[Label] = set()
        spurious = []
        for f in findings:
            path, line = (f.path, f.line) if hasattr(f, "path") else f  # type: ignore[attr-defined,misc]
            rel = path[len(root) :] if path.startswith(root) else path
            if (rel, line) in seen or (rel, line) in neutral:
                continue
            seen.add((rel, line))
            matched = [s for s in by_path.get(rel, ()) if s.line <= line <= s.end_line]
            if matched:
                hit.update(matched)
            else:
                spurious.append((rel, line, decoys.get((rel, line), "filler")))
        tp = len(seen) - len(spurious)
        planted = Counter(s.type for s in self.secrets)
        found = Counter(s.type for s in hit)
        missed = tuple(s for s in self.secrets if s not in hit)
        return Score(
            true_positives=tp,
            false_positives=len(spurious),
            false_negatives=len(missed),
            precision=tp / len(seen) if seen else 1.0,
            recall=len(hit) / len(self.secrets) if self.secrets else 1.0,
            missed=missed,
            spurious=tuple(sorted(spurious)),
            recall_by_type={t: (found.get(t, 0), n) for t, n in sorted(planted.items())},
        )


@dataclass
class _Doc:
    """A file being written: its lines, and which of them hold plants and decoys."""

    lines: list[str] = field(default_factory=list)
    secrets: list[tuple[int, int, str, str]] = field(default_factory=list)
    decoys: list[tuple[int, str]] = field(default_factory=list)

    def add(self, *lines: str) -> _Doc:
        for text in lines:
            self.lines.extend(text.split("\n"))
        return self

    def secret(self, kind: str, value: str, text: str) -> _Doc:
        start = len(self.lines) + 1
        self.add(text)
        self.secrets.append((start, len(self.lines), kind, value))
        return self

    def decoy(self, kind: str, text: str) -> _Doc:
        start = len(self.lines) + 1
        self.add(text)
        self.decoys.extend((n, kind) for n in range(start, len(self.lines) + 1))
        return self


# Decoys: documented examples and placeholders, in several syntaxes.
AWS_EXAMPLE_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PLACEHOLDERS = (
    "${DB_PASSWORD}",
    "<token>",
    "changeme",
    "xxxxxxxxxxxx",
    "********",
    "",
    "$API_TOKEN",
    "your-api-key-here",
    "<your-password>",
    "REPLACE_ME",
    "{{ vault_db_password }}",
)


class _Tree:
    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.seed = seed
        self.rng = random.Random(seed)
        self.fill = Filler(random.Random(seed + 1))
        self.labels: list[Label] = []
        self.decoys: list[Decoy] = []
        self.neutral: list[Decoy] = []
        self.files = 0
        self.bytes = 0

    # -- writing ----------------------------------------------------------------------------------

    def write(self, rel: str, doc: _Doc | str | bytes, mode: int | None = None) -> None:
        path = self.root / rel
        while os.path.lexists(path):  # random names may repeat: never overwrite a labeled file
            stem, dot, ext = rel.rpartition(".") if "." in rel.rsplit("/", 1)[-1] else (rel, "", "")
            rel = f"{stem}-{self.rng.randint(2, 99)}{dot}{ext}"
            path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(doc, _Doc):
            data = ("\n".join(doc.lines) + "\n").encode()
            self.labels.extend(Label(rel, a, b, kind, value) for a, b, kind, value in doc.secrets)
            self.decoys.extend(Decoy(rel, n, kind) for n, kind in doc.decoys)
        else:
            data = doc.encode() if isinstance(doc, str) else doc
        with open(path, "wb") as fh:
            fh.write(data)
        if mode is not None:
            os.chmod(path, mode)
        self.files += 1
        self.bytes += len(data)

    def mkdir(self, rel: str, mode: int) -> None:
        p = self.root / rel
        p.mkdir(parents=True, exist_ok=True)
        os.chmod(p, mode)

    # -- credentials by kind, as (type, value, line text) in a given syntax ----------------------

    def credential(self, kind: str, syntax: str = "env") -> tuple[str, str, str]:
        """One fake credential of `kind`, and a line (or lines) assigning it in `syntax`."""
        r = self.rng
        user = self.fill.name()
        host = (
            f"{r.choice(('db', 'pg', 'mysql', 'mongo', 'redis', 'mq'))}{r.randint(1, 9)}.internal.example.net"
        )
        makers = {
            "aws-access-key-id": ("AWS_ACCESS_KEY_ID", lambda: fakes.aws_key_id(r)),
            "aws-secret-key": ("AWS_SECRET_ACCESS_KEY", lambda: fakes.aws_secret(r)),
            "github-token": (
                "GITHUB_TOKEN",
                lambda: fakes.github(r, r.choice(("ghp", "gho", "ghu", "ghs", "ghr"))),
            ),
            "github-fine-grained": ("GH_TOKEN", lambda: fakes.github_fine_grained(r)),
            "gitlab-token": ("GITLAB_TOKEN", lambda: fakes.gitlab(r)),
            "slack-token": ("SLACK_BOT_TOKEN", lambda: r.choice((fakes.slack_bot, fakes.slack_user))(r)),
            "slack-webhook": ("SLACK_WEBHOOK_URL", lambda: fakes.slack_webhook(r)),
            "google-api-key": ("GOOGLE_MAPS_API_KEY", lambda: fakes.google_api_key(r)),
            "stripe-key": ("STRIPE_SECRET_KEY", lambda: fakes.stripe(r)),
            "sendgrid-key": ("SENDGRID_API_KEY", lambda: fakes.sendgrid(r)),
            "twilio-key": ("TWILIO_API_KEY", lambda: fakes.twilio_api_key(r)),
            "twilio-auth-token": ("TWILIO_AUTH_TOKEN", lambda: fakes.twilio_auth_token(r)),
            "npm-token": ("NPM_TOKEN", lambda: fakes.npm(r)),
            "pypi-token": ("TWINE_PASSWORD", lambda: fakes.pypi(r)),
            "dockerhub-token": ("DOCKERHUB_TOKEN", lambda: fakes.dockerhub(r)),
            "vault-token": ("VAULT_TOKEN", lambda: fakes.vault(r)),
            "terraform-token": ("TF_TOKEN_app_terraform_io", lambda: fakes.terraform(r)),
            "heroku-key": ("HEROKU_API_KEY", lambda: fakes.heroku(r)),
            "openai-key": ("OPENAI_API_KEY", lambda: fakes.openai(r)),
            "anthropic-key": ("ANTHROPIC_API_KEY", lambda: fakes.anthropic(r)),
            "jwt": ("AUTH_TOKEN", lambda: fakes.jwt(r)),
            "azure-storage-key": (
                "AZURE_STORAGE_CONNECTION_STRING",
                lambda: (
                    f"DefaultEndpointsProtocol=https;AccountName={user}store;AccountKey={fakes.azure_storage_key(r)};EndpointSuffix=core.windows.net"
                ),
            ),
            "db-url-postgres": (
                "DATABASE_URL",
                lambda: (
                    f"{r.choice(('postgres', 'postgresql'))}://{user}:{fakes.password(r)}@{host}:5432/{self.fill.word()}"
                ),
            ),
            "db-url-mysql": (
                "MYSQL_URL",
                lambda: f"mysql://{user}:{fakes.password(r)}@{host}:3306/{self.fill.word()}",
            ),
            "db-url-mongodb": (
                "MONGO_URL",
                lambda: (
                    f"{r.choice(('mongodb', 'mongodb+srv'))}://{user}:{fakes.password(r)}@{host}/{self.fill.word()}?retryWrites=true"
                ),
            ),
            "db-url-redis": ("REDIS_URL", lambda: f"redis://:{fakes.password(r)}@{host}:6379/0"),
            "db-url-amqp": ("AMQP_URL", lambda: f"amqp://{user}:{fakes.password(r)}@{host}:5672/%2f"),
            "basic-auth-url": (
                "ARTIFACTS_URL",
                lambda: (
                    f"https://{user}:{fakes.password(r)}@artifacts.internal.example.net/repository/releases/"
                ),
            ),
            "generic-password": (
                r.choice(("DB_PASSWORD", "ADMIN_PASSWORD", "API_SECRET", "SECRET_KEY", "SMTP_PASSWORD")),
                lambda: fakes.password(r, r.randint(20, 32)),
            ),
        }
        name, make = makers[kind]
        value = make()
        return kind, value, assign(syntax, name, value, r)

    def plant(self, doc: _Doc, kind: str, syntax: str) -> None:
        k, value, text = self.credential(kind, syntax)
        doc.secret(k, value, text)


CODE_KINDS = (
    "aws-access-key-id",
    "github-token",
    "gitlab-token",
    "slack-token",
    "slack-webhook",
    "google-api-key",
    "stripe-key",
    "sendgrid-key",
    "twilio-key",
    "npm-token",
    "dockerhub-token",
    "heroku-key",
    "openai-key",
    "anthropic-key",
    "jwt",
    "azure-storage-key",
    "db-url-postgres",
    "db-url-mysql",
    "db-url-mongodb",
    "db-url-redis",
    "db-url-amqp",
    "basic-auth-url",
    "vault-token",
    "terraform-token",
    "github-fine-grained",
    "pypi-token",
)
ENV_KINDS = (*CODE_KINDS, "aws-secret-key", "twilio-auth-token", "generic-password")


def assign(syntax: str, name: str, value: str, rng: random.Random) -> str:
    """`name` set to `value` the way a file of `syntax` writes it."""
    low = name.lower()
    if syntax == "env":
        return f"{name}={value}" if rng.random() < 0.7 else f'{name}="{value}"'
    if syntax == "export":
        return f"export {name}='{value}'" if rng.random() < 0.5 else f'export {name}="{value}"'
    if syntax == "yaml":
        return f"  {low}: {value}" if rng.random() < 0.5 else f'  {low}: "{value}"'
    if syntax == "ini":
        return f"{low} = {value}"
    if syntax == "toml":
        return f'{low} = "{value}"'
    if syntax == "json":
        return f'  "{low}": "{value}",'
    if syntax == "py":
        return f'{name} = "{value}"'
    if syntax == "js":
        return f"const {low.replace('_', '')} = '{value}';"
    if syntax == "go":
        return f'\t{low.replace("_", "")} := "{value}"'
    if syntax == "systemd":
        return f'Environment="{name}={value}"'
    raise ValueError(syntax)


# -- the tree's parts ---------------------------------------------------------------------------


def _home(t: _Tree, user: str, full: bool) -> None:
    r, f = t.rng, t.fill
    h = f"home/{user}"
    t.mkdir(h, 0o750)
    want = (lambda: True) if full else (lambda: r.random() < 0.45)

    hist = [
        "ls -la",
        "cd /srv",
        "git pull --rebase",
        "sudo systemctl restart app",
        "kubectl get pods -n prod",
        "docker ps",
        "tail -f /var/log/app/app.log",
    ]
    doc = _Doc()
    for _ in range(r.randint(30, 120)):
        x = r.random()
        if x < 0.06:
            pw = fakes.password(r)
            doc.secret("shell-history-password", pw, f"PGPASSWORD='{pw}' psql -h db1.internal -U {user} app")
        elif x < 0.10:
            pw = fakes.password(r)
            doc.secret("shell-history-password", pw, f"mysql -u root -p{pw} -h mysql2.internal shop")
        elif x < 0.16:
            t.plant(
                doc,
                r.choice(("github-token", "vault-token", "openai-key", "aws-secret-key", "npm-token")),
                "export",
            )
        elif x < 0.19:
            tok = fakes.jwt(r)
            doc.secret(
                "jwt",
                tok,
                f"curl -sS -H 'Authorization: Bearer {tok}' https://api.internal.example.net/v1/me",
            )
        elif x < 0.22:
            doc.decoy(
                "placeholder",
                f"export API_TOKEN={r.choice(('$(vault read -field=token secret/ci)', '<token>', '${CI_TOKEN}'))}",
            )
        elif x < 0.24:
            doc.decoy("env-reference", 'PGPASSWORD="$DB_PASSWORD" pg_dump -h db1.internal app > /tmp/app.sql')
        else:
            doc.add(r.choice(hist))
    t.write(f"{h}/.bash_history", doc, 0o600)

    t.write(
        f"{h}/.bashrc",
        _Doc().add(
            "# ~/.bashrc", "export EDITOR=vim", 'export PATH="$HOME/.local/bin:$PATH"', *f.lines("md", 2)
        ),
    )
    if want():
        doc = _Doc().add("# hostname:port:database:username:password")
        for _ in range(r.randint(1, 3)):
            pw = fakes.password(r)
            doc.secret("pgpass", pw, f"db{r.randint(1, 9)}.internal:5432:{f.word()}:{user}:{pw}")
        doc.decoy("placeholder", "localhost:5432:*:postgres:*")
        t.write(f"{h}/.pgpass", doc, 0o600)
    if want():
        pw = fakes.password(r)
        doc = _Doc().secret("netrc", pw, f"machine artifacts.internal.example.net login {user} password {pw}")
        t.write(f"{h}/.netrc", doc, 0o600)
    if want():
        tok = fakes.github(r)
        doc = _Doc().secret("git-credentials", tok, f"https://{user}:{tok}@github.com")
        pw = fakes.password(r)
        doc.secret("git-credentials", pw, f"https://{user}:{pw}@gitlab.internal.example.net")
        t.write(f"{h}/.git-credentials", doc, 0o600)
    if want():
        doc = _Doc().add("[default]")
        kid, sec = fakes.aws_key_id(r), fakes.aws_secret(r)
        doc.secret("aws-access-key-id", kid, f"aws_access_key_id = {kid}")
        doc.secret("aws-secret-key", sec, f"aws_secret_access_key = {sec}")
        doc.add("", "[docs-example]").decoy("example-key", f"aws_access_key_id = {AWS_EXAMPLE_ID}")
        doc.decoy("example-key", f"aws_secret_access_key = {AWS_EXAMPLE_SECRET}")
        t.write(f"{h}/.aws/credentials", doc, 0o600)
        t.write(f"{h}/.aws/config", "[default]\nregion = eu-west-1\noutput = json\n", 0o644)
    if want():
        _kubeconfig(t, f"{h}/.kube/config", user)
    if want():
        pw = fakes.password(r)
        auth = base64.b64encode(f"{user}:{pw}".encode()).decode()
        doc = _Doc().add("{", '  "auths": {', '    "registry.internal.example.net": {')
        doc.secret("docker-auth", auth, f'      "auth": "{auth}"')
        doc.add("    }", "  },", '  "credsStore": ""', "}")
        t.write(f"{h}/.docker/config.json", doc, 0o600)
    if want():
        tok = fakes.npm(r)
        doc = _Doc().add("registry=https://registry.npmjs.org/")
        doc.secret("npm-token", tok, f"//registry.npmjs.org/:_authToken={tok}")
        doc.decoy("env-reference", "//npm.internal.example.net/:_authToken=${NPM_TOKEN}")
        t.write(f"{h}/.npmrc", doc, 0o600)
    if want():
        tok = fakes.pypi(r)
        doc = _Doc().add("[distutils]", "index-servers =", "    pypi", "", "[pypi]", "username = __token__")
        doc.secret("pypi-token", tok, f"password = {tok}")
        t.write(f"{h}/.pypirc", doc, 0o600)
    if want():
        tok = fakes.vault(r)
        t.write(f"{h}/.vault-token", _Doc().secret("vault-token", tok, tok), 0o600)
    # SSH: private keys are secrets, the .pub files beside them are decoys.
    t.mkdir(f"{h}/.ssh", 0o700)
    key, pub = fakes.openssh_ed25519(r, f"{user}@workstation", encrypted=r.random() < 0.3)
    kind = "private-key-encrypted" if "bcrypt" in _decode_openssh_kdf(key) else "private-key-openssh"
    t.write(f"{h}/.ssh/id_ed25519", _Doc().secret(kind, key.strip(), key.rstrip("\n")), 0o600)
    t.write(f"{h}/.ssh/id_ed25519.pub", _Doc().decoy("public-key", pub), 0o644)
    t.write(
        f"{h}/.ssh/authorized_keys",
        _Doc().decoy("public-key", pub).decoy("public-key", fakes.openssh_ed25519(r, "ci@build")[1]),
        0o600,
    )
    t.write(
        f"{h}/.ssh/known_hosts",
        _Doc().decoy("public-key", "github.com " + fakes.openssh_ed25519(r, "")[1].rsplit(" ", 1)[0]),
        0o644,
    )
    if full and user.endswith("1"):
        pem, pub = fakes.rsa_pem(t.seed)
        t.write(f"{h}/.ssh/id_rsa", _Doc().secret("private-key-rsa", pem.strip(), pem.rstrip("\n")), 0o600)
        t.write(f"{h}/.ssh/id_rsa.pub", _Doc().decoy("public-key", pub + f" {user}@laptop"), 0o644)
        ppk = fakes.putty_ed25519(r, f"{user}@windows")
        t.write(
            f"{h}/Documents/putty/{user}.ppk",
            _Doc().secret("putty-key", ppk.strip(), ppk.rstrip("\n")),
            0o600,
        )
        enc = fakes.encrypted_rsa_pem(t.seed, b"correct horse", r)
        t.write(
            f"{h}/.ssh/legacy_rsa",
            _Doc().secret("private-key-encrypted", enc.strip(), enc.rstrip("\n")),
            0o600,
        )


def _decode_openssh_kdf(pem: str) -> str:
    body = "".join(pem.strip().splitlines()[1:-1])
    return base64.b64decode(body)[:64].decode("latin-1")


def _kubeconfig(t: _Tree, rel: str, user: str) -> None:
    r = t.rng
    ec, _ = fakes.ec_pem(r)
    key_data = base64.b64encode(ec.encode()).decode()
    cert = base64.b64encode(fakes.certificate(r, user).encode()).decode()
    tok = fakes.jwt(r, "https://kubernetes.default.svc")
    doc = _Doc().add("apiVersion: v1", "kind: Config", "clusters:", "- cluster:")
    doc.decoy(
        "certificate",
        f"    certificate-authority-data: {base64.b64encode(fakes.certificate(r, 'kube-ca').encode()).decode()}",
    )
    doc.add(
        "    server: https://k8s.internal.example.net:6443",
        "  name: prod",
        "users:",
        f"- name: {user}",
        "  user:",
    )
    doc.decoy("certificate", f"    client-certificate-data: {cert}")
    doc.secret("kube-client-key", key_data, f"    client-key-data: {key_data}")
    doc.add("- name: ci-deployer", "  user:")
    doc.secret("kube-token", tok, f"    token: {tok}")
    doc.add(
        "contexts:",
        "- context:",
        "    cluster: prod",
        f"    user: {user}",
        "  name: prod",
        "current-context: prod",
    )
    t.write(rel, doc, 0o600)


def _project(t: _Tree, base: str, n: int) -> None:
    r, f = t.rng, t.fill
    # .env: several real credentials among ordinary settings (world-readable on purpose for some).
    doc = _Doc().add(f"APP_NAME={f.name()}", "PORT=8080", "LOG_LEVEL=info")
    # The first project is the old monolith whose .env holds one of everything.
    for kind in ENV_KINDS if n == 0 else r.sample(ENV_KINDS, 6):
        t.plant(doc, kind, "env")
        doc.add(r.choice(("DEBUG=false", "WORKERS=4", f"REGION=eu-west-{r.randint(1, 3)}", "")))
    t.write(f"{base}/.env", doc, r.choice((0o600, 0o644, 0o640)))
    ex = _Doc().add("# copy to .env and fill in")
    for name in (
        "DATABASE_URL",
        "STRIPE_SECRET_KEY",
        "GITHUB_TOKEN",
        "DB_PASSWORD",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "OPENAI_API_KEY",
    ):
        value = r.choice(PLACEHOLDERS)
        if name == "DATABASE_URL":
            value = r.choice(
                (
                    "postgres://app:${DB_PASSWORD}@db:5432/app",
                    "postgres://app@localhost/app",
                    "postgres://user:password@localhost:5432/db",
                )
            )
        elif name.startswith("AWS_ACCESS"):
            value = AWS_EXAMPLE_ID
        elif name.startswith("AWS_SECRET"):
            value = AWS_EXAMPLE_SECRET
        ex.decoy("placeholder", f"{name}={value}")
    t.write(f"{base}/.env.example", ex, 0o644)

    # config files in several syntaxes
    doc = _Doc().add("database:", "  host: db1.internal", "  port: 5432", f"  user: {f.name()}")
    t.plant(doc, "generic-password", "yaml")
    doc.add(*f.lines("yaml", 20), "integrations:")
    t.plant(doc, r.choice(CODE_KINDS), "yaml")
    doc.decoy("env-reference", "  smtp_password: ${SMTP_PASSWORD}")
    doc.decoy("placeholder", f"  api_token: {r.choice(('<token>', 'changeme', 'xxxxxxxx', ''))}")
    doc.add(*f.lines("yaml", 20))
    t.write(f"{base}/config/settings.yaml", doc, 0o644)

    doc = _Doc().add("[server]", "bind = 0.0.0.0:8000", *f.lines("ini", 10), "[database]")
    t.plant(doc, "generic-password", "ini")
    doc.add(*f.lines("ini", 10))
    t.write(f"{base}/config/app.ini", doc, 0o640)

    doc = _Doc().add("[service]", f'name = "{f.name()}"', "[secrets]")
    t.plant(doc, r.choice(CODE_KINDS), "toml")
    doc.decoy("uuid", f'instance_id = "{_uuid(r)}"')
    doc.decoy("hash", f'config_sha256 = "{r.getrandbits(256):064x}"')
    t.write(f"{base}/config.toml", doc, 0o644)

    doc = _Doc().add("{", f'  "name": "{f.name()}",', '  "version": "1.4.2",')
    t.plant(doc, r.choice(CODE_KINDS), "json")
    doc.decoy("uuid", f'  "tenant_id": "{_uuid(r)}",')
    doc.add('  "retries": 3', "}")
    t.write(f"{base}/config/integrations.json", doc, 0o644)

    # docker-compose with a DB URL
    doc = _Doc().add("services:", "  app:", "    image: app:latest", "    environment:")
    k, v, _ = t.credential("db-url-postgres")
    doc.secret(k, v, f"      DATABASE_URL: {v}")
    doc.decoy("env-reference", "      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}")
    t.write(f"{base}/docker-compose.yml", doc, 0o644)

    # source files: settings reading the environment (decoys) and one hardcoded credential
    doc = _Doc().add("import os", "", *f.lines("py", 15))
    doc.decoy("env-reference", 'DB_PASSWORD = os.environ["DB_PASSWORD"]')
    doc.decoy("env-reference", 'API_TOKEN = os.getenv("API_TOKEN", "")')
    doc.decoy("code", "password = request.form['password']")
    doc.decoy("code", "def login(username: str, password: str) -> Session:")
    doc.add(*f.lines("py", 15))
    t.plant(doc, r.choice(CODE_KINDS), "py")
    doc.add(*f.lines("py", 30))
    t.write(f"{base}/src/{f.name()}/settings.py", doc, 0o644)

    doc = _Doc().add(*f.lines("js", 20))
    doc.decoy("env-reference", "const apiKey = process.env.STRIPE_SECRET_KEY;")
    t.plant(doc, r.choice(CODE_KINDS), "js")
    doc.add(*f.lines("js", 30))
    t.write(f"{base}/web/src/{f.name()}.js", doc, 0o644)

    doc = _Doc().add("package main", "", *f.lines("go", 20))
    t.plant(doc, r.choice(CODE_KINDS), "go")
    doc.add(*f.lines("go", 20))
    t.write(f"{base}/cmd/{f.name()}/main.go", doc, 0o644)

    # decoy-only files
    doc = _Doc().add("# Setup", "", "Configure AWS credentials, for example:", "", "```")
    doc.decoy("example-key", f"aws_access_key_id = {AWS_EXAMPLE_ID}")
    doc.decoy("example-key", f"aws_secret_access_key = {AWS_EXAMPLE_SECRET}")
    doc.add("```", "", *f.lines("md", 20))
    doc.decoy("placeholder", "export GITHUB_TOKEN=<your-token>")
    doc.decoy("git-sha", f"Fixed in commit {r.getrandbits(160):040x}.")
    t.write(f"{base}/README.md", doc, 0o644)

    lock = _Doc().add("{", f'  "name": "{f.name()}",', '  "lockfileVersion": 3,', '  "packages": {')
    for _ in range(r.randint(20, 60)):
        pkg = f.name()
        lock.add(
            f'    "node_modules/{pkg}": {{',
            f'      "version": "{r.randint(0, 9)}.{r.randint(0, 20)}.{r.randint(0, 9)}",',
        )
        lock.add(f'      "resolved": "https://registry.npmjs.org/{pkg}/-/{pkg}-1.0.0.tgz",')
        lock.decoy(
            "lockfile-integrity", f'      "integrity": "sha512-{base64.b64encode(r.randbytes(64)).decode()}"'
        )
        lock.add("    },")
    lock.add("  }", "}")
    t.write(f"{base}/web/package-lock.json", lock, 0o644)

    req = _Doc()
    for _ in range(r.randint(5, 15)):
        req.add(f"{f.name()}=={r.randint(0, 5)}.{r.randint(0, 30)}.{r.randint(0, 9)} \\")
        req.decoy("lockfile-integrity", f"    --hash=sha256:{r.getrandbits(256):064x}")
    t.write(f"{base}/requirements.txt", req, 0o644)

    fx = _Doc().add("{")
    fx.decoy("example-key", f'  "aws_access_key_id": "{AWS_EXAMPLE_ID}",')
    fx.decoy("placeholder", '  "password": "changeme",')
    fx.decoy("placeholder", '  "token": "xxxxxxxxxxxxxxxxxxxx",')
    fx.decoy("uuid", f'  "request_id": "{_uuid(r)}",')
    fx.decoy("hash", f'  "etag": "{r.getrandbits(128):032x}"')
    fx.add("}")
    t.write(f"{base}/tests/fixtures/{f.name()}.json", fx, 0o644)

    cert = fakes.certificate(r, f"{f.name()}.internal.example.net")
    t.write(f"{base}/certs/server.crt", _Doc().decoy("certificate", cert.rstrip("\n")), 0o644)
    # a binary asset
    t.write(
        f"{base}/static/logo.png",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + r.randbytes(r.randint(2000, 20000)),
        0o644,
    )


def _uuid(r: random.Random) -> str:
    h = f"{r.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:]}"


def _etc(t: _Tree) -> None:
    r, f = t.rng, t.fill
    for i in range(3):
        doc = _Doc().add(
            "[Unit]", f"Description={f.name()} service", "After=network-online.target", "", "[Service]"
        )
        doc.add(f"ExecStart=/usr/local/bin/{f.name()} serve", "User=app")
        t.plant(doc, "generic-password" if i == 0 else r.choice(ENV_KINDS), "systemd")
        doc.add('Environment="LOG_LEVEL=info"')
        doc.decoy("placeholder", "Environment=API_TOKEN=%d/api-token")
        doc.add("", "[Install]", "WantedBy=multi-user.target")
        t.write(f"etc/systemd/system/{f.name()}.service", doc, 0o644)
    doc = _Doc().add("concurrent = 4", "check_interval = 0", "", "[[runners]]", '  name = "build7"')
    doc.add('  url = "https://gitlab.internal.example.net/"', "  id = 42")
    tok = fakes.gitlab(r, "glrt-")
    doc.secret("gitlab-runner-token", tok, f'  token = "{tok}"')
    doc.add('  executor = "docker"', "  [runners.docker]", '    image = "debian:12"')
    t.write("etc/gitlab-runner/config.toml", doc, 0o600)
    key, pub = fakes.openssh_ed25519(r, "root@host")
    t.write(
        "etc/ssh/ssh_host_ed25519_key",
        _Doc().secret("private-key-openssh", key.strip(), key.rstrip("\n")),
        0o600,
    )
    t.write("etc/ssh/ssh_host_ed25519_key.pub", _Doc().decoy("public-key", pub), 0o644)
    pem, _ = fakes.rsa_pem(t.seed, pkcs8=True)
    t.write(
        "etc/ssl/private/server.key", _Doc().secret("private-key-pkcs8", pem.strip(), pem.rstrip("\n")), 0o640
    )
    ec, ecpub = fakes.ec_pem(r)
    t.write(
        "etc/ssl/private/signing.pem", _Doc().secret("private-key-ec", ec.strip(), ec.rstrip("\n")), 0o600
    )
    t.write("etc/ssl/certs/signing.pub.pem", _Doc().decoy("public-key", ecpub.rstrip("\n")), 0o644)
    for _ in range(3):
        cert = fakes.certificate(r, f"{f.name()} Root CA")
        t.write(f"etc/ssl/certs/{f.name()}.pem", _Doc().decoy("certificate", cert.rstrip("\n")), 0o644)
    # GitHub Actions runner: the RSA parameters of its private key, as the runner stores them.
    nums = fakes.rsa_key(t.seed, 2048).private_numbers()

    def b(x: int) -> str:
        return base64.b64encode(x.to_bytes((x.bit_length() + 7) // 8, "big")).decode()

    params = {
        "d": b(nums.d),
        "dp": b(nums.dmp1),
        "dq": b(nums.dmq1),
        "exponent": b(nums.public_numbers.e),
        "inverseQ": b(nums.iqmp),
        "modulus": b(nums.public_numbers.n),
        "p": b(nums.p),
        "q": b(nums.q),
    }
    text = json.dumps(params)
    t.write(
        "opt/actions-runner/.credentials_rsaparams",
        _Doc().secret("github-runner-key", params["d"], text),
        0o600,
    )
    # Its companion names the OAuth client: an identifier, not a secret, but a scanner that flags
    # the file as a runner credential is not wrong either.
    creds = {
        "scheme": "OAuth",
        "data": {
            "clientId": _uuid(r),
            "authorizationUrl": "https://vstoken.actions.githubusercontent.com/_apis/oauth2/token/x",
            "requireFipsCryptography": "False",
        },
    }
    lines = json.dumps(creds, indent=2).splitlines()
    t.write("opt/actions-runner/.credentials", "\n".join(lines) + "\n", 0o600)
    t.neutral.extend(
        Decoy("opt/actions-runner/.credentials", n, "runner-client") for n in range(1, len(lines) + 1)
    )


def _shared_dirs(t: _Tree) -> None:
    r, f = t.rng, t.fill
    t.mkdir("tmp", 0o1777)
    t.mkdir("var/tmp", 0o1777)
    t.mkdir("dev/shm", 0o1777)
    doc = _Doc().add("#!/bin/sh", "set -eu", f"cd /srv/{f.name()}")
    for kind in r.sample(
        ("github-token", "dockerhub-token", "aws-secret-key", "heroku-key", "terraform-token"), 3
    ):
        t.plant(doc, kind, "export")
    doc.add("make deploy")
    t.write(f"tmp/deploy-{r.randint(1000, 9999)}.sh", doc, 0o755)
    _kubeconfig(t, f"tmp/kubeconfig-ci-{r.randint(100, 999)}", "ci")
    doc = _Doc().add("notes from the migration", *f.lines("md", 5))
    t.plant(doc, "db-url-postgres", "env")
    doc.add(*f.lines("md", 5))
    t.write("var/tmp/migration-notes.txt", doc, 0o644)
    doc = _Doc().add(*f.lines("log", 40))
    tok = fakes.slack_webhook(r)
    doc.secret("slack-webhook", tok, f"posting alert to {tok}")
    doc.add(*f.lines("log", 40))
    t.write("dev/shm/alert-relay.log", doc, 0o666)


def _logs(t: _Tree) -> None:
    r, f = t.rng, t.fill
    doc = _Doc().add(*f.lines("log", 300))
    k, v, _ = t.credential("db-url-postgres")
    doc.secret(k, v, f"2026-03-04T10:00:00Z api01 app[311]: ERROR could not connect to {v}: timeout")
    doc.add(*f.lines("log", 200))
    tok = fakes.jwt(r)
    doc.secret(
        "jwt",
        tok,
        f'2026-03-04T10:00:02Z api01 app[311]: DEBUG request headers: {{"Authorization": "Bearer {tok}"}}',
    )
    doc.add(*f.lines("log", 300))
    t.write("var/log/app/app.log", doc, 0o644)


def _bulk(t: _Tree, target_bytes: int, target_files: int, users: list[str], projects: list[str]) -> None:
    """Fill with ordinary files up to the size and count asked, a few with a credential inside."""
    r, f = t.rng, t.fill
    files_left = max(0, target_files - t.files)
    bytes_left = max(0, target_bytes - t.bytes)
    if not files_left or not bytes_left:
        return
    # A quarter of the bytes in a few large logs, the rest in many source files.
    n_logs = max(1, min(files_left // 10, bytes_left // (4 * 1024 * 1024) + 1))
    log_bytes = bytes_left // 4
    for i in range(n_logs):
        t.write(
            f"var/log/{r.choice(('app', 'nginx', 'deploy'))}/{f.name()}.log.{i}",
            f.text("log", log_bytes // n_logs),
            0o640,
        )
    files_left -= n_logs
    bytes_left -= log_bytes
    if files_left <= 0:
        return
    mean = max(64, bytes_left // files_left)
    exts = (
        ("py", "py"),
        ("js", "js"),
        ("go", "go"),
        ("yaml", "yaml"),
        ("ini", "cfg"),
        ("md", "md"),
        ("sql", "sql"),
    )
    roots = [f"{p}/src" for p in projects] + [f"home/{u}/projects/{f.name()}" for u in users]
    dirs: list[str] = []
    plant_every = max(150, files_left // 120)
    for i in range(files_left):
        if i % 20 == 0:
            dirs.append(f"{r.choice(roots)}/{f.name()}")
        kind, ext = r.choice(exts)
        size = int(min(mean * 8, r.expovariate(1 / mean)) + 32)
        if i % plant_every == plant_every // 2:
            doc = _Doc().add(*f.lines(kind, 10))
            syntax = {"py": "py", "js": "js", "go": "go", "yaml": "yaml", "ini": "ini"}.get(kind, "env")
            t.plant(doc, r.choice(ENV_KINDS if syntax in ("env", "ini", "yaml") else CODE_KINDS), syntax)
            doc.add(*f.lines(kind, max(1, int(size / f.avg[kind]) - 11)))
            t.write(f"{dirs[-1]}/{f.name()}.{ext}", doc)
        elif i % 97 == 50:
            doc = _Doc().add(*f.lines(kind, 10))
            doc.decoy("git-sha", f"# vendored from upstream at {r.getrandbits(160):040x}")
            doc.add(*f.lines(kind, max(1, int(size / f.avg[kind]) - 11)))
            t.write(f"{dirs[-1]}/{f.name()}.{ext}", doc)
        else:
            t.write(f"{dirs[-1]}/{f.name()}.{ext}", f.text(kind, size))


def generate(
    root: Path | str,
    *,
    seed: int = 0,
    size_mb: float = 5.0,
    files: int | None = None,
    users: int | None = None,
    projects: int | None = None,
) -> Labels:
    """Write a labeled host-like tree under `root` (created; should be empty) and return its labels.

    `size_mb` and `files` (default: 400 per MB) are targets for the whole tree; the planted
    credentials come first, so a very small target gives a tree of about 1 MB and 100 files.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    t = _Tree(root, seed)
    n_users = users if users is not None else max(3, min(40, int(3 + size_mb / 8)))
    n_projects = projects if projects is not None else max(3, min(60, int(3 + size_mb / 4)))
    names = [f"{t.fill.name()}{i}" for i in range(n_users)]
    for i, u in enumerate(names):
        _home(t, u, full=i < 2)
    proj = [f"srv/{t.fill.name()}-{t.fill.word()}" for _ in range(n_projects)]
    for i, p in enumerate(proj):
        _project(t, p, i)
    _etc(t)
    _shared_dirs(t)
    _logs(t)
    target_files = files if files is not None else int(size_mb * 400)
    _bulk(t, int(size_mb * 1e6), target_files, names, proj)
    return Labels(root, tuple(t.labels), tuple(t.decoys), t.files, t.bytes, tuple(t.neutral))
