#!/usr/bin/env bash
# Every benchmark in turn (about an hour, the demo is most of it), then the table in bench/README.md.
# Run on an otherwise idle machine: a second busy process skews multi-threaded torch code badly.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
for script in knn linear extract preprocess knn_memory rerun demo; do
    echo "== bench_${script}.py"
    "$PY" "bench/bench_${script}.py"
done
"$PY" bench/report.py
