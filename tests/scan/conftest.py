"""Fixtures for the scanner tests: the real `hoopctl` executable and one generated host-like tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hoopctl.demo.hosttree import Labels, generate
from hoopctl.host.scan import ScanResult, scan_paths

TREE_SEED = 20261125


def hoopctl(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess[str]:
    """Run the installed `hoopctl` as a separate process (its start-up included), capturing output."""
    exe = Path(sys.executable).with_name("hoopctl")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from hoopctl.cli import main; main()"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="session")
def host_tree(tmp_path_factory: pytest.TempPathFactory) -> Labels:
    """A ~2 MB labeled tree (homes, /srv, /tmp, /etc, logs) shared by the tests that only read it."""
    return generate(tmp_path_factory.mktemp("host") / "root", seed=TREE_SEED, size_mb=2)


@pytest.fixture(scope="session")
def host_scan(host_tree: Labels) -> ScanResult:
    return scan_paths([host_tree.root], jobs=2)
