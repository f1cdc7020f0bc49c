"""Act 1: a host full of credentials left behind, found by `hoopctl scan`."""

from __future__ import annotations

import json
from pathlib import Path

from hoopctl.cli.scan import render_table
from hoopctl.demo import hosttree
from hoopctl.demo.ui import act, note, ok, run, step
from hoopctl.demo.ui import hoopctl as cli
from hoopctl.host.scan import Finding


def scan_act(workdir: Path) -> None:
    act(
        1,
        "what the contractor left behind",
        "A host that CI jobs and people have used for a year: homes, /srv projects, /tmp, /etc, logs.",
    )
    root = workdir / "host"
    step(f"planting credentials of many kinds (and decoys that must not be reported) under {root}")
    labels = hosttree.generate(root, seed=7, size_mb=4)
    note(
        f"{labels.files} files, {labels.bytes / 1e6:.1f} MB, {len(labels.secrets)} planted credentials "
        f"of {len(labels.types())} types, {len(labels.decoys)} decoys"
    )
    step("scanning it: secrets are shown redacted, with a fingerprint (one finding per type here)")
    result = json.loads(run(cli("scan", "--json", str(root)), show=False).stdout)
    findings = [
        Finding(**{k: f[k] for k in Finding.__dataclass_fields__ if k in f}) for f in result["findings"]
    ]
    one_per_type = list({f.type: f for f in reversed(findings)}.values())[:12]
    for line in render_table(one_per_type, relative_to=str(root)).splitlines():
        note(line)
    score = labels.score((f.path, f.line) for f in findings)
    stats = result["stats"]
    ok(
        f"{len(findings)} findings of {len({f.type for f in findings})} types; precision {score.precision:.3f}, "
        f"recall {score.recall:.3f} against the planted labels; {stats.get('mb_per_s', 0):.0f} MB/s"
    )
    planted = {s.path for s in labels.secrets}
    assert planted, "the generated tree has credentials"
