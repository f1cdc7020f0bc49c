"""Structured parsers: files whose format says which value is the secret, chosen by path.

A parser is a pure function `parse(text) -> Iterable[(rule_id, start, end)]` over the latin-1
decoded file; the engine looks the rule id up in rules.yaml for its name and severity, then applies
the shared false-positive filter. Selection uses the path's name, suffix and parent directories only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from hoopctl.detect.parsers import authfiles, envfiles, inifiles, structured

Parser = Callable[[str], Iterable[tuple[str, int, int]]]

PARSERS: dict[str, Parser] = {
    "pgpass": authfiles.pgpass,
    "netrc": authfiles.netrc,
    "git-credentials": authfiles.git_credentials,
    "vault-token": authfiles.vault_token,
    "npmrc": authfiles.npmrc,
    "aws-credentials": inifiles.aws_credentials,
    "pypirc": inifiles.pypirc,
    "gitlab-runner": inifiles.gitlab_runner,
    "docker-config": structured.docker_config,
    "kubeconfig": structured.kubeconfig,
    "github-runner": structured.github_runner,
    "dotenv": envfiles.dotenv,
    "shell-history": envfiles.shell_history,
    "systemd-unit": envfiles.systemd_unit,
}

_BY_NAME = {
    ".pgpass": "pgpass",
    "pgpass.conf": "pgpass",
    ".netrc": "netrc",
    "_netrc": "netrc",
    ".git-credentials": "git-credentials",
    ".vault-token": "vault-token",
    ".npmrc": "npmrc",
    "npmrc": "npmrc",
    ".yarnrc": "npmrc",
    ".pypirc": "pypirc",
    ".dockercfg": "docker-config",
    "auth.json": "docker-config",
    ".credentials": "github-runner",
    ".credentials_rsaparams": "github-runner",
    "kubeconfig": "kubeconfig",
    "admin.conf": "kubeconfig",
    "kubelet.conf": "kubeconfig",
    "controller-manager.conf": "kubeconfig",
    "scheduler.conf": "kubeconfig",
    "k3s.yaml": "kubeconfig",
    ".env": "dotenv",
    ".envrc": "dotenv",
    # shell start-up files: `export NAME=value` lines, the same shape as an env file
    ".bashrc": "dotenv",
    ".bash_profile": "dotenv",
    ".bash_login": "dotenv",
    ".profile": "dotenv",
    ".zshrc": "dotenv",
    ".zshenv": "dotenv",
    ".zprofile": "dotenv",
    "environment": "dotenv",
    ".bash_history": "shell-history",
    ".zsh_history": "shell-history",
    ".sh_history": "shell-history",
    ".ash_history": "shell-history",
    ".history": "shell-history",
    "fish_history": "shell-history",
    ".psql_history": "shell-history",
    ".mysql_history": "shell-history",
    ".rediscli_history": "shell-history",
}
_UNIT_SUFFIXES = (".service", ".socket", ".mount", ".timer", ".path", ".target")


_INTERESTING_PARENTS = frozenset(
    {".aws", "git", ".kube", "gitlab-runner", ".gitlab-runner", "default", "sysconfig"}
)


def select_names(path: str) -> list[str]:
    """Names of the parsers for a file at `path` (see PARSERS).

    Plain string work, no pathlib: this runs once per scanned file, tens of thousands of times.
    """
    p = path.replace("\\", "/") if "\\" in path else path
    head, _, name = p.rpartition("/")
    parent = head.rpartition("/")[2]
    out: list[str] = []
    by_name = _BY_NAME.get(name)
    if by_name:
        out.append(by_name)
    if parent in _INTERESTING_PARENTS:
        if parent == ".aws" and name in ("credentials", "config"):
            out.append("aws-credentials")
        elif parent == "git" and name == "credentials":
            out.append("git-credentials")
        elif parent == ".kube" and name == "config":
            out.append("kubeconfig")
        elif parent in ("gitlab-runner", ".gitlab-runner") and name == "config.toml":
            out.append("gitlab-runner")
        elif parent in ("default", "sysconfig") and "/etc/" in f"/{head}/":
            out.append("dotenv")
    if "kubeconfig" in name and "kubeconfig" not in out:
        out.append("kubeconfig")
    if name == "config.json" and any(
        f"/{d}/" in f"/{head}/" for d in (".docker", "docker", "containers", "kubelet")
    ):
        out.append("docker-config")
    if name.startswith(".env.") or name.endswith(".env"):
        out.append("dotenv")
    if name.endswith(_UNIT_SUFFIXES) or (
        name.endswith(".conf") and parent.endswith(".d") and "systemd" in head
    ):
        out.append("systemd-unit")
    return out if len(out) < 2 else list(dict.fromkeys(out))


def select(path: str) -> list[Parser]:
    """The parser functions that apply to a file at `path`."""
    if not path:
        return []
    return [PARSERS[n] for n in select_names(path)]
