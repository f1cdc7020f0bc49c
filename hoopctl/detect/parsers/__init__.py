"""Structured parsers: files whose format says which value is the secret, chosen by path.

A parser is a pure function `parse(text) -> Iterable[(rule_id, start, end)]` over the latin-1
decoded file; the engine looks the rule id up in rules.yaml for its name and severity, then applies
the shared false-positive filter. Selection uses the path's name, suffix and parent directories only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import PurePosixPath

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


def select_names(path: str) -> list[str]:
    """Names of the parsers for a file at `path` (see PARSERS)."""
    p = PurePosixPath(path.replace("\\", "/"))
    name = p.name
    parents = [part for part in p.parts[:-1]]
    parent = parents[-1] if parents else ""
    out: list[str] = []
    if name in _BY_NAME:
        out.append(_BY_NAME[name])
    if parent == ".aws" and name in ("credentials", "config"):
        out.append("aws-credentials")
    if parent == "git" and name == "credentials":
        out.append("git-credentials")
    if (parent == ".kube" and name == "config") or name.endswith((".kubeconfig", "-kubeconfig")):
        out.append("kubeconfig")
    if name == "config.json" and any(
        part in (".docker", "docker", "containers", "kubelet") for part in parents
    ):
        out.append("docker-config")
    if name == "config.toml" and parent in ("gitlab-runner", ".gitlab-runner"):
        out.append("gitlab-runner")
    if (
        name.startswith(".env.")
        or name.endswith(".env")
        or (parent in ("default", "sysconfig") and "etc" in parents)
    ):
        out.append("dotenv")
    if name.endswith(_UNIT_SUFFIXES) or (
        parent.endswith(".d") and name.endswith(".conf") and "systemd" in parents
    ):
        out.append("systemd-unit")
    return list(dict.fromkeys(out))


def select(path: str) -> list[Parser]:
    """The parser functions that apply to a file at `path`."""
    if not path:
        return []
    return [PARSERS[n] for n in select_names(path)]
