"""Microbenchmark of the recorder's hot path: ``python -m hoopctl.audit.bench [DIR]``.

Prints the mean and the 99th percentile cost of ``statement()`` and of
``result()`` under each fsync policy, next to a bare ``os.write`` of a line of the
same size to the same filesystem (the floor this code cannot go under).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hoopctl.audit.recorder import Recorder

TEXT = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _measure(fn, n: int) -> tuple[float, float]:
    samples = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        fn()
        samples.append((clock() - t0) / 1000)
    return statistics.fmean(samples), _percentile(samples, 0.99)


def run(base: Path, n: int = 50_000) -> list[str]:
    """Measure and return report lines."""
    out = []
    fd = os.open(base / "bare", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    line = b"x" * 300 + b"\n"
    mean, p99 = _measure(lambda: os.write(fd, line), n)
    os.close(fd)
    out.append(f"bare os.write        mean {mean:6.2f} us  p99 {p99:6.2f} us")
    for policy, count in (("batch", n), ("os", n), ("always", min(n, 500))):
        with Recorder(base / policy, fsync=policy) as recorder:  # type: ignore[arg-type]
            rec = recorder.open_session("bench", ("job:bench",), "127.0.0.1:1", "db", "read")
            mean, p99 = _measure(lambda rec=rec: rec.statement(TEXT, ["42"], True, "read", "extended"), count)
            out.append(f"statement() {policy:<7}  mean {mean:6.2f} us  p99 {p99:6.2f} us  (n={count})")
            mean, p99 = _measure(lambda rec=rec: rec.result(0, 0.123, 1, None, 0), count)
            out.append(f"result()    {policy:<7}  mean {mean:6.2f} us  p99 {p99:6.2f} us  (n={count})")
            rec.close()
    return out


def main(argv: list[str]) -> int:
    if argv:
        base = Path(argv[0])
        base.mkdir(parents=True, exist_ok=True)
        lines = run(base)
    else:
        with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
            lines = run(Path(tmp))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
