"""Scanner throughput and accuracy: `hoopctl scan` vs `detect-secrets scan --all-files`, same tree, same run.

    .venv/bin/python benchmarks/scan.py                 # ~20 MB comparison, then a >=100 MB hoopctl run
    .venv/bin/python benchmarks/scan.py --skip-large --small-mb 5

Both tools run as whole processes (start-up included) on a generated host-like tree
(hoopctl.demo.hosttree) whose planted credentials are labeled, so precision and recall are
measured against the labels: a finding counts when it lies on a labeled (file, line). The trees
live in a temporary directory removed at the end; they were just written, so both tools read from
the page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hoopctl.demo.hosttree import Labels, generate  # noqa: E402

BIN = Path(sys.executable).parent


def _child_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_hoopctl(root: Path, runs: int) -> tuple[float, dict, float]:
    """Wall time, output and CPU seconds (all its processes) of the median of `runs` runs of
    `hoopctl scan --json ROOT`. CPU time is what a busy shared machine does not distort."""
    done = []
    for _ in range(runs):
        cpu = _child_cpu()
        t = time.perf_counter()
        r = subprocess.run(
            [str(BIN / "hoopctl"), "scan", "--json", str(root)], capture_output=True, text=True
        )
        took = time.perf_counter() - t
        if r.returncode not in (0, 1):
            sys.exit(f"hoopctl failed ({r.returncode}): {r.stderr.strip()}")
        done.append((took, json.loads(r.stdout), _child_cpu() - cpu))
    done.sort(key=lambda x: x[0])
    return done[len(done) // 2]


def run_detect_secrets(root: Path) -> tuple[float, list[tuple[str, int]]]:
    exe = BIN / "detect-secrets"
    if not exe.exists():
        exe = Path(shutil.which("detect-secrets") or "detect-secrets")
    t = time.perf_counter()
    r = subprocess.run([str(exe), "scan", "--all-files"], cwd=root, capture_output=True, text=True)
    took = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"detect-secrets failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    results = json.loads(r.stdout)["results"]
    found = [(f"{root}/{name}", hit["line_number"]) for name, hits in results.items() for hit in hits]
    return took, found


def describe(name: str, labels: Labels, seconds: float, found: list) -> str:
    s = labels.score(found)
    mb = labels.bytes / 1e6
    return (
        f"  {name:<15} {seconds:8.2f} s  {mb / seconds:8.2f} MB/s  {labels.files / seconds:10,.0f} files/s  "
        f"precision {s.precision:.3f}  recall {s.recall:.3f}  (TP {s.true_positives}, FP {s.false_positives}, "
        f"FN {s.false_negatives})"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small-mb", type=float, default=20.0, help="comparison tree size (default 20)")
    ap.add_argument("--small-files", type=int, default=8000, help="comparison tree files (default 8000)")
    ap.add_argument("--large-mb", type=float, default=120.0, help="hoopctl-only tree size (default 120)")
    ap.add_argument("--large-files", type=int, default=40000, help="hoopctl-only tree files (default 40000)")
    ap.add_argument("--skip-large", action="store_true", help="only the comparison")
    ap.add_argument("--skip-detect-secrets", action="store_true", help="hoopctl only, on both trees")
    ap.add_argument("--runs", type=int, default=3, help="hoopctl runs per tree; the median is reported")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--verbose", action="store_true", help="list misses and false positives")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="hoopctl-bench-"))
    try:
        t = time.perf_counter()
        small = generate(tmp / "small", seed=args.seed, size_mb=args.small_mb, files=args.small_files)
        print(
            f"comparison tree: {small.bytes / 1e6:.1f} MB, {small.files:,} files, {len(small.secrets)} planted "
            f"credentials, {len(small.decoys)} decoys (generated in {time.perf_counter() - t:.1f} s)"
        )
        h_time, h_doc, h_cpu = run_hoopctl(small.root, args.runs)
        h_found = [(f["path"], f["line"]) for f in h_doc["findings"]]
        print(describe("hoopctl scan", small, h_time, h_found))
        print(f"  hoopctl CPU: {h_cpu:.2f} s user+sys; load average now {os.getloadavg()[0]:.1f}")
        if args.verbose:
            s = small.score(h_found)
            for m in s.missed:
                print(f"    hoopctl missed {m.type} {m.path}:{m.line}")
            for p, n, k in s.spurious:
                print(f"    hoopctl spurious ({k}) {p}:{n}")
        if not args.skip_detect_secrets:
            d_time, d_found = run_detect_secrets(small.root)
            print(describe("detect-secrets", small, d_time, d_found))
            print(f"  throughput ratio hoopctl/detect-secrets: {d_time / h_time:.1f}x")
        shutil.rmtree(small.root)

        if not args.skip_large:
            t = time.perf_counter()
            large = generate(tmp / "large", seed=args.seed + 1, size_mb=args.large_mb, files=args.large_files)
            print(
                f"large tree: {large.bytes / 1e6:.1f} MB, {large.files:,} files, {len(large.secrets)} planted "
                f"(generated in {time.perf_counter() - t:.1f} s)"
            )
            h_time, h_doc, h_cpu = run_hoopctl(large.root, args.runs)
            print(
                describe("hoopctl scan", large, h_time, [(f["path"], f["line"]) for f in h_doc["findings"]])
            )
            st = h_doc["stats"]
            print(
                f"  in-process: {st['seconds']:.2f} s, {st['mb_per_s']:.1f} MB/s with {st['jobs']} worker(s); "
                f"whole process incl. start-up: {large.bytes / 1e6 / h_time:.1f} MB/s"
            )
            print(
                f"  CPU: {h_cpu:.2f} s user+sys for all its processes = {large.bytes / 1e6 / h_cpu:.1f} MB per "
                f"CPU-second; load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
