#!/usr/bin/env bash
# CUDA readiness in one go (under 8 minutes on one GPU): the tests only a GPU exercises
# (tests/cuda, marker `cuda`) and the speed benchmark on CUDA. Writes to benchmarks/results/:
#   gpu_check.json                  the GPU, torch, the tests' outcome and the time taken
#   gpu_check_pytest.txt            the tests' report
#   langevin_speed_cuda_b100.csv    per-step costs on CUDA (read by lfbm_lightning.cli.plan)
#
#   bash benchmarks/gpu_check.sh            # from the repository root
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
RESULTS=benchmarks/results
mkdir -p "$RESULTS"
start=$(date +%s)

timeout 300 "$PY" -m pytest tests/cuda -m cuda -q -p no:cacheprovider \
  > "$RESULTS/gpu_check_pytest.txt" 2>&1
tests_rc=$?
tail -5 "$RESULTS/gpu_check_pytest.txt"

timeout 150 "$PY" benchmarks/langevin_speed.py --device cuda --repeats 3 \
  --out "$RESULTS/langevin_speed_cuda_b100.csv"
bench_rc=$?

"$PY" - "$tests_rc" "$bench_rc" "$start" <<'PY'
import json, sys, time
import torch
tests_rc, bench_rc, start = map(int, sys.argv[1:])
record = {
    "gpu": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "tests_exit_status": tests_rc,   # 0: every cuda test passed
    "benchmark_exit_status": bench_rc,
    "seconds": round(time.time() - start),
}
with open("benchmarks/results/gpu_check.json", "w") as f:
    json.dump(record, f, indent=2)
print(json.dumps(record))
PY
exit $(( tests_rc != 0 || bench_rc != 0 ))
