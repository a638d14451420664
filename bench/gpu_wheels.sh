#!/usr/bin/env bash
# Wheels that bench/gpu_check.py needs on the lent GPU machine beyond what can be assumed there (torch,
# transformers, numpy): tqdm (acft.device, the kNN search), scikit-learn and its needs (the baselines of the kNN
# and linear probes), pytest and its needs (the tests marked gpu). Downloaded here, where PyPI is reachable,
# into bench/gpu_wheels/ (git-ignored), for the GPU machine's CPython (3.12 there, not this machine's 3.11;
# override with PYVER=3.11) on x86-64 manylinux. Versions are requirements.txt's pins (and the local venv's for
# the packages it does not pin). 45 MiB (47,018,613 bytes), 34 MiB of it scipy and 9 MiB scikit-learn.
#
# On the GPU machine (device `run` tool, carry ["bench/gpu_wheels"]), see bench/README.md, "GPU check":
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#       bench/gpu_wheels/*.whl && export PYTHONPATH=/tmp/site && python3 bench/gpu_check.py --out $OUT/gpu_check.json
set -euo pipefail
cd "$(dirname "$0")"
PYVER="${PYVER:-3.12}"
PIP="${PIP:-../.venv/bin/pip}"
DEST=gpu_wheels
rm -rf "$DEST"
mkdir -p "$DEST"
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done
# --no-deps: exactly these files, one version each (every need is named here).
"$PIP" download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    "${PLATFORMS[@]}" -d "$DEST" \
    tqdm==4.70.1 \
    scikit-learn==1.9.1 scipy==1.17.1 joblib==1.6.0 threadpoolctl==3.8.0 narwhals==2.29.0 \
    pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 pygments==2.21.0
ls -l "$DEST"
du -sh "$DEST"
echo "total bytes: $(cat "$DEST"/*.whl | wc -c)"
