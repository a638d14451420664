#!/usr/bin/env bash
# Every benchmark in turn, then the table in bench/README.md. RUNS timed runs of each script that repeats
# (default 3, medians with min-max in the JSON; RUNS=5 for tighter spreads): about 1 h 45 min on 2 idle cores
# (bench_scaling.py ~50 min, the demo ~25 min at 3 runs).
# Run on an otherwise idle machine: a second busy process skews multi-threaded torch code badly.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
RUNS=${RUNS:-3}
for script in knn linear extract preprocess rerun demo tune_overhead; do
    echo "== bench_${script}.py --runs ${RUNS}"
    "$PY" "bench/bench_${script}.py" --runs "$RUNS"
done
for script in cache_dtype knn_memory scaling; do  # one measurement each (no repeats)
    echo "== bench_${script}.py"
    "$PY" "bench/bench_${script}.py"
done
"$PY" bench/report.py
# The GPU check (bench/README.md, "GPU check") runs at full size only where CUDA is; on a CPU its reduced size
# is a smoke test of the same code paths (seconds), written outside bench/results.
echo "== gpu_check.py"
if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    "$PY" bench/gpu_check.py
else
    echo "no CUDA here: the full-size GPU check needs a GPU; running --size reduced as a smoke test only"
    "$PY" bench/gpu_check.py --size reduced --out "${TMPDIR:-/tmp}/gpu_check_reduced.json"
fi
