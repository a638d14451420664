"""Stage 5: tidy result rows -> one results table -> paper tables (Markdown, LaTeX, CSV) and report figures.

- ``aggregate``: concatenate per-job row files, validate, refuse stale config hashes.
- ``stats``: the unit of inference (fold, or tuning seed on a fixed split), mean ± std with a t-interval over
  units, and the paired test (t-interval of the mean difference, sign-flip p-value).
- ``tables``: per-dataset headline, delta, geometry and few-shot tables.
- ``plots``: metric vs k, 2-D PCA of test embeddings, training curves.
"""
