"""The one JSON summary of ``benchmarks/gpu_check.sh``: the machine, every test's outcome and
time (from the JUnit reports), what the tests recorded (tests/helpers/gpu_device.py), the
benchmark's seconds per Langevin step, the exit statuses and the wall-clock.

    python benchmarks/gpu_check_summary.py OUT DEVICE TESTS_RC BENCH_RC START_EPOCH
"""

from __future__ import annotations

import csv
import json
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch


def test_outcomes(out: Path) -> list[dict]:
    """One entry per test case of the JUnit reports: name, outcome, seconds, message."""
    cases = []
    for report in sorted(out.glob("gpu_check_*.xml")):
        for case in ET.parse(report).getroot().iter("testcase"):
            outcome, message = "passed", ""
            for tag in ("failure", "error", "skipped"):
                node = case.find(tag)
                if node is not None:
                    outcome = {"failure": "failed"}.get(tag, tag)
                    lines = (node.get("message") or "").splitlines()
                    message = lines[0][:300] if lines else ""
                    break
            cases.append(
                {
                    "test": f"{case.get('classname', '')}::{case.get('name')}",
                    "outcome": outcome,
                    "seconds": round(float(case.get("time", 0)), 1),
                    **({"message": message} if message else {}),
                }
            )
    return cases


def main() -> None:
    out, device = Path(sys.argv[1]), sys.argv[2]
    tests_rc, bench_rc, start = map(int, sys.argv[3:6])
    cases = test_outcomes(out)
    records_dir = out / "gpu_check_records"
    records = {p.stem: json.loads(p.read_text()) for p in sorted(records_dir.glob("*.json"))}
    bench = out / f"langevin_speed_{device}_b100.csv"
    steps = {}
    if bench.is_file():
        with bench.open() as f:
            rows = [r for r in csv.DictReader(f) if r["unit"] == "ours"]
        steps = {r["setting"]: float(r["seconds"]) for r in rows}
    modules = (out / "gpu_check_modules.txt").read_text().splitlines()
    summary = {
        "device": device if device == "cuda" else "cpu (dry run)",
        "gpu": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "missing_modules": modules,
        "tests": {
            outcome: sum(c["outcome"] == outcome for c in cases)
            for outcome in ("passed", "failed", "error", "skipped")
        },
        "test_cases": cases,
        "measured": records,
        "seconds_per_langevin_step": steps,
        "tests_exit_status": tests_rc,
        "benchmark_exit_status": bench_rc,
        "seconds": round(time.time() - start),
    }
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "test_cases"}, indent=2))


if __name__ == "__main__":
    main()
