"""JSON and YAML shaped credential files: docker config.json, kubeconfig, GitHub runner credentials.

Read line by line with patterns rather than a full parse, so a truncated or hand-edited file still
yields its secrets and every secret keeps its offset.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from hoopctl.detect.parsers._util import Found

_DOCKER = re.compile(
    r'"(?P<key>auth|identitytoken|registrytoken|password)"\s*:\s*"(?P<v>[^"]+)"', re.IGNORECASE
)


def docker_config(text: str) -> Iterator[Found]:
    """~/.docker/config.json, .dockercfg, containers auth.json: `auths.<registry>.auth` (base64 user:pass)."""
    for m in _DOCKER.finditer(text):
        yield ("docker-config-auth", m.start("v"), m.end("v"))


_KUBE = re.compile(
    r"""^[ \t-]*(?P<key>token|client-key-data|password|id-token|refresh-token|client-secret)
        [ \t]*:[ \t]*(?P<q>["']?)(?P<v>[^\s"'#]+)(?P=q)[ \t]*(?:\#.*)?$""",
    re.MULTILINE | re.VERBOSE,
)
_KUBE_RULE = {
    "token": "kubeconfig-token",
    "id-token": "kubeconfig-token",
    "refresh-token": "kubeconfig-token",
    "client-secret": "kubeconfig-token",
    "client-key-data": "kubeconfig-client-key",
    "password": "kubeconfig-password",
}


def kubeconfig(text: str) -> Iterator[Found]:
    """kubeconfig users: bearer `token`, `client-key-data` (base64 PEM key), basic-auth `password`."""
    for m in _KUBE.finditer(text):
        yield (_KUBE_RULE[m.group("key")], m.start("v"), m.end("v"))


_RSA_D = re.compile(r'"d"\s*:\s*"(?P<v>[A-Za-z0-9+/=]{16,})"')


def github_runner(text: str) -> Iterator[Found]:
    """Actions runner `.credentials_rsaparams`: the runner's RSA private exponent.

    `.credentials` and `.runner` only name the runner (client id, token URL, pool); the private key
    that signs its token requests is the secret.
    """
    for m in _RSA_D.finditer(text):
        yield ("github-runner-credentials", m.start("v"), m.end("v"))
