#!/usr/bin/env bash
# GPU readiness in one go, at most 8 minutes on one GPU (an H100): the tests only a GPU
# exercises (tests/cuda: placement, every supported precision in a real run, torch.compile and
# CUDA graphs in a real run with their graphs and skips counted, a resume, the fast fit under
# compile, FID features) and the Langevin step benchmark on CUDA. Writes to DIR
# (default benchmarks/results):
#   gpu_check.json                  the one summary: machine, each test's outcome and time,
#                                   what the tests measured, the benchmark's per-step seconds
#   gpu_check_pytest_*.txt, *.xml   the test processes' reports
#   langevin_speed_cuda_b100.csv    per-step costs on CUDA (read by lfbm_lightning.cli.plan)
#
#   bash benchmarks/gpu_check.sh [--out DIR]     # on the GPU machine
#   bash benchmarks/gpu_check.sh --cpu           # dry run of every step on the CPU (tiny
#                                                # benchmark; writes under /tmp by default)
# Python packages the GPU machine lacks are installed from wheels in .whl/ (git-ignored) into
# a temporary folder when that folder holds any (benchmarks/README.md lists them).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DEVICE=cuda
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu) DEVICE=cpu ;;
    --out) OUT="$2"; shift ;;
    *) echo "error: unknown argument $1 (use --cpu, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
[[ -z "$OUT" ]] && { [[ $DEVICE == cuda ]] && OUT=benchmarks/results || OUT=${TMPDIR:-/tmp}/gpu_check_dryrun; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
start=$(date +%s)

# 1. dependencies: wheels of .whl/ into a temporary site folder; the repository on the path
if compgen -G ".whl/*.whl" > /dev/null; then
  SITE=$(mktemp -d)
  "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" .whl/*.whl \
    || "$PY" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' "$SITE" .whl/*.whl
  export PYTHONPATH="$SITE:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
"$PY" - > "$OUT/gpu_check_modules.txt" <<'PY'
import importlib
for name in ("torch", "pytorch_lightning", "torchmetrics", "hydra", "omegaconf", "antlr4",
             "torch_fidelity", "sklearn", "scipy", "PIL", "matplotlib", "tqdm", "rich", "pytest"):
    try:
        importlib.import_module(name)
    except Exception as err:  # noqa: BLE001 - any failure to import is reported
        print(f"{name}: {type(err).__name__}: {err}")
PY

# 2. the tests, in three processes at once: in-process checks, real runs, compiled real runs
export LFBM_TEST_DEVICE=$DEVICE LFBM_GPU_CHECK_OUT="$OUT/gpu_check_records" WANDB_MODE=offline
rm -rf "$LFBM_GPU_CHECK_OUT" "$OUT"/gpu_check_*.xml "$OUT"/gpu_check_pytest_*.txt  # no stale reports
run_part() {  # NAME PYTEST-ARGS...: one test process, its report and JUnit file
  local name=$1; shift
  # addopts without pyproject's "-n 2": one process per part, and no need for pytest-xdist
  timeout "${GPU_CHECK_TEST_TIMEOUT:-330}" "$PY" -m pytest "$@" -m cuda -q -p no:cacheprovider \
    -o addopts="--strict-markers -ra --import-mode=importlib" \
    --junitxml="$OUT/gpu_check_$name.xml" > "$OUT/gpu_check_pytest_$name.txt" 2>&1
}
pids=()
run_part checks tests/cuda/test_cuda.py & pids+=($!)
run_part runs tests/cuda/test_gpu_runs.py -k "not compiled_run" & pids+=($!)
run_part compiled_runs tests/cuda/test_gpu_runs.py -k compiled_run & pids+=($!)
tests_rc=0
for pid in "${pids[@]}"; do wait "$pid" || tests_rc=1; done
tail -n 3 "$OUT"/gpu_check_pytest_*.txt

# 3. the step benchmark (the paper settings; no option variants, no memory probes)
if [[ $DEVICE == cuda ]]; then
  bench=(--device cuda --repeats 3 --no-options --no-memory)
else  # a dry run: one small setting
  bench=(--device cpu --settings svhn --batch 4 --repeats 1 --steps 1 --train-k 1 --threads 1
         --no-options --no-memory)
fi
timeout "${GPU_CHECK_BENCH_TIMEOUT:-120}" "$PY" benchmarks/langevin_speed.py "${bench[@]}" \
  --out "$OUT/langevin_speed_${DEVICE}_b100.csv" > "$OUT/gpu_check_benchmark.txt" 2>&1
bench_rc=$?
tail -n 4 "$OUT/gpu_check_benchmark.txt"

# 4. the summary
"$PY" benchmarks/gpu_check_summary.py "$OUT" "$DEVICE" "$tests_rc" "$bench_rc" "$start"
exit $(( tests_rc != 0 || bench_rc != 0 ))
