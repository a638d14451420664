#!/usr/bin/env bash
# Every benchmark in turn (about 2.5 hours on 2 idle cores: bench_scaling.py ~1 h, the demo ~45 min), then the
# table in bench/README.md.
# Run on an otherwise idle machine: a second busy process skews multi-threaded torch code badly.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
for script in knn linear extract preprocess cache_dtype knn_memory rerun demo scaling tune_overhead; do
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
