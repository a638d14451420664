"""Peak memory of the kNN probe's search at 100k x 768 train clips, by chunk size and search mode.

Each measurement runs in a fresh child process: it builds the data (bench_knn.make_data), resets the
kernel's peak-RSS counter (``/proc/self/clear_refs``, Linux), runs one search and reads the new peak
(``VmHWM``). Reported: peak - resident size before the search = the search's working memory, and the input
arrays' own size for scale. scikit-learn's brute-force search is measured the same way for comparison (its
``working_memory`` setting, 1024 MiB by default, bounds its distance chunks).

The working memory has two parts: fixed copies of the train bank (float64 unit rows for exact re-scoring,
8 bytes per value, plus the screen's bfloat16 rows, 2 bytes per value) and similarity blocks bounded by
``chunk_size``^2 pairs.

    .venv/bin/python bench/bench_knn_memory.py [--train 100000] [--queries 5000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import BENCH_DIR, write_result

CHILD = r"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, {bench!r})
import common  # noqa: F401  (puts the acft package on sys.path)
import numpy as np
from bench_knn import make_data

def rss(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)

train, labels, query, _ = make_data({train}, {queries})
side, search, chunk = {side!r}, {search!r}, {chunk}
if side == "sklearn":
    from sklearn.neighbors import KNeighborsClassifier
    clf = KNeighborsClassifier(5, algorithm="brute", metric="cosine").fit(train, labels)
    run = lambda: clf.kneighbors(query, 50)
else:
    from acft.probes.knn_search import nearest_neighbours
    run = lambda: nearest_neighbours(train, query, [1, 5, 10, 20, 50], chunk_size=chunk, search=search)
before = rss("VmRSS")
Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
start = time.perf_counter()
run()
seconds = time.perf_counter() - start
print(json.dumps({{"working_bytes": rss("VmHWM") - before, "input_bytes": train.nbytes + query.nbytes,
                  "seconds": seconds}}))
"""


def measure(side: str, search: str, chunk: int, n_train: int, n_query: int) -> dict:
    code = CHILD.format(
        bench=str(BENCH_DIR), train=n_train, queries=n_query, side=side, search=search, chunk=chunk
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--chunks", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    args = parser.parse_args()
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("needs Linux /proc (clear_refs, VmHWM)")
    rows = []
    cases = [("ours", "auto", c) for c in args.chunks] + [("ours", "exact", 4096), ("sklearn", "-", 0)]
    for side, search, chunk in cases:
        result = measure(side, search, chunk, args.train, args.queries)
        rows.append({"side": side, "search": search, "chunk_size": chunk, **result})
        label = f"{side} search={search} chunk_size={chunk}" if side == "ours" else "sklearn brute cosine"
        print(
            f"{label}: working memory {result['working_bytes'] / 2**20:,.0f} MiB "
            f"(inputs {result['input_bytes'] / 2**20:,.0f} MiB), {result['seconds']:.1f} s"
        )
    fixed = args.train * 768 * (8 + 2) / 2**20
    print(f"fixed bank copies at this size: {fixed:,.0f} MiB (float64 unit rows + bfloat16 screen rows)")
    write_result(
        "knn_memory",
        {"task": f"{args.train} x 768 train, {args.queries} queries, k up to 50", "rows": rows},
    )


if __name__ == "__main__":
    main()
