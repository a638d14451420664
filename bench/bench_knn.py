"""kNN probe search vs scikit-learn's brute-force cosine KNeighborsClassifier, same data, same process.

Task (issue 8): 20k x 768 float32 train clips, 5k queries, 50 classes, k = 5 majority vote; the predictions
must be identical (asserted). Data: 50 class centres ~ N(0, I) plus one shared offset ~ N(0, I) (embeddings
of real models are anisotropic: most cosines are positive), clips = centre + offset + 5 N(0, I), which puts
kNN accuracy near 0.6: neither trivially separable nor hopeless, so near-ties at the 5th neighbour occur.

Rows:
- sklearn: ``KNeighborsClassifier(5, algorithm="brute", metric="cosine").fit(train).predict(queries)``.
- ours: ``acft.probes.knn_search.nearest_neighbours(search="auto")`` + ``knn.predict_single`` (majority).
- ours, exact: the same with ``search="exact"`` (float64 for every pair), the reference the screen certifies
  against.
- torch float32 matmul + topk: normalise, one product, ``topk``; the naive port, not certified (context only).
- screening product alone: only the bfloat16 (or float32) products of ours, inputs prepared beforehand. Every
  exact search has to score all 100M pairs, so sklearn's time over this one bounds the speed-up any exact
  method built on this product can reach here (context only).
- ours, probe k = 1, 5, 10, 20, 50: the probe's default neighbour counts in one search (context only).

    .venv/bin/python bench/bench_knn.py [--runs 5] [--train 20000] [--queries 5000]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import describe, repeat, summary, write_result
from sklearn.neighbors import KNeighborsClassifier

from acft.probes import knn, knn_search


def make_data(
    n_train: int, n_query: int, dim: int = 768, n_classes: int = 50, noise: float = 5.0, seed: int = 0
):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim)) + rng.standard_normal(dim)

    def draw(n):
        labels = rng.integers(0, n_classes, n)
        return (centres[labels] + noise * rng.standard_normal((n, dim))).astype(np.float32), labels

    return (*draw(n_train), *draw(n_query))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--train", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()
    train, train_labels, query, query_labels = make_data(args.train, args.queries)
    n_classes, k = 50, args.k

    def sklearn_predict():
        clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute", metric="cosine")
        return clf.fit(train, train_labels).predict(query)

    def ours(search="auto", ks=(k,)):
        def run():
            found = knn_search.nearest_neighbours(train, query, ks, search=search)
            return knn.predict_single(
                found, k, train_labels, n_classes, weighted=False, temperature=0.07
            ), found

        return run

    def screening_product():
        screen = knn_search.fastest_screen()
        bank_low = knn_search.unit_rows(train).to(knn_search.SCREENS[screen][0])
        query_low = knn_search.unit_rows(query).to(bank_low.dtype)
        rows = max(1, 4096 * 4096 // len(bank_low))
        product = knn_search._screen_product(bank_low, rows)

        def run():
            for start in range(0, len(query_low), rows):
                product(query_low[start : start + rows])

        return run

    def naive_torch():
        x, q = torch.from_numpy(train), torch.from_numpy(query)
        x, q = x / x.norm(dim=1, keepdim=True), q / q.norm(dim=1, keepdim=True)
        return (q @ x.T).topk(k, dim=1).indices

    print(f"train {train.shape}, queries {query.shape}, k = {k}, screen here: {knn_search.fastest_screen()}")
    sk_times, sk_pred = repeat(sklearn_predict, args.runs)
    our_times, (our_pred, found) = repeat(ours(), args.runs)
    exact_times, (exact_pred, _) = repeat(ours("exact"), max(1, args.runs // 2))
    naive_times, _ = repeat(naive_torch, args.runs)
    product_times, _ = repeat(screening_product(), args.runs)
    probe_times, _ = repeat(ours(ks=(1, 5, 10, 20, 50)), args.runs)
    # Each certified screen forced, whatever auto picked: what bfloat16 costs against float32 on this CPU. The
    # picked one is the auto run above (timed once, not twice).
    screen_times = {
        name: our_times if name == found.stats["search"] else repeat(ours(name), args.runs)[0]
        for name in knn_search.SCREENS
    }
    same = bool(np.array_equal(our_pred, sk_pred)) and bool(np.array_equal(exact_pred, sk_pred))
    print(describe("sklearn brute cosine", sk_times))
    print(describe(f"ours ({found.stats['search']} screen)", our_times))
    print(describe("ours, exact float64", exact_times))
    print(describe("torch float32 matmul + topk (uncertified)", naive_times))
    ceiling = summary(sk_times)["median"] / summary(product_times)["median"]
    print(describe(f"screening product alone (sklearn / this = {ceiling:.1f}x)", product_times))
    print(describe("ours, probe k = 1..50", probe_times))
    for name, times in screen_times.items():
        print(describe(f"ours, {name} screen forced", times))
    print(
        f"rescored pairs per query: {found.stats['rescored_pairs'] / len(query):.1f}, "
        f"whole-row searches: {found.stats['whole_rows']}, accuracy {np.mean(our_pred == query_labels):.3f}"
    )
    ratio = summary(sk_times)["median"] / summary(our_times)["median"]
    print(f"identical predictions: {same}")
    print(f"speed-up over sklearn (median/median): {ratio:.1f}x (goal >= 10x)")
    floor = summary(our_times)["median"] / summary(product_times)["median"]
    print(f"search / its screening product (median/median): {floor:.2f}x (goal <= 1.5x)")
    write_result(
        "knn",
        {
            "task": f"{args.train} x 768 train, {args.queries} queries, 50 classes, k={k} majority",
            "sklearn_s": summary(sk_times),
            "ours_s": summary(our_times),
            "ours_exact_s": summary(exact_times),
            "torch_f32_naive_s": summary(naive_times),
            "screening_product_s": summary(product_times),
            "ceiling_speedup": ceiling,
            "ours_probe_ks_s": summary(probe_times),
            "screen": found.stats["search"],
            "screen_forced_s": {name: summary(times) for name, times in screen_times.items()},
            "rescored_pairs_per_query": found.stats["rescored_pairs"] / len(query),
            "identical_predictions": same,
            "speedup": ratio,
            "goal": ">= 10x",
        },
    )
    if not same:
        raise SystemExit("predictions differ from scikit-learn's")


if __name__ == "__main__":
    main()
