"""Linear probe fit vs scikit-learn's LogisticRegression(lbfgs), same standardised data, same process.

The same problem on both sides: multinomial logistic regression on features standardised by the train split,
L2 penalty weight_decay = 1 / (C n_train) (see ``acft.probes.linear``), at most 100 L-BFGS iterations and
gradient tolerance 1e-4, C = 1 (scikit-learn's defaults). Data as in bench_knn.py (20k x 768 train, 5k test,
50 classes, centre + shared offset + noise) but noisier, 10 N(0, I), about 47 % accuracy: at bench_knn's
5 the classes are linearly separable (99.5 %) and both optimisers stop after a few iterations, which would
time set-up, not fitting. Accuracy on the test split must agree within 0.5 points.

Rows:
- sklearn: ``LogisticRegression(C=C).fit(train).predict(test)`` on the standardised float32 features.
- ours: ``acft.probes.linear.fit_linear`` (one grid point, seed 0) + argmax of the test logits.

    .venv/bin/python bench/bench_linear.py [--runs 5] [--C 1.0]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch
from bench_knn import make_data
from common import describe, repeat, summary, write_result
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from acft.probes.linear import fit_linear, standardise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--train", type=int, default=20_000)
    parser.add_argument("--test", type=int, default=5_000)
    parser.add_argument("--C", type=float, default=1.0, help="inverse L2 strength (sklearn default 1.0)")
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--noise", type=float, default=10.0, help="clip noise std (bench_knn.py uses 5)")
    args = parser.parse_args()
    train, train_labels, test, test_labels = make_data(args.train, args.test, noise=args.noise)
    train_x, test_x = standardise(train, test, device=torch.device("cpu"))
    weight_decay = 1.0 / (args.C * len(train))

    def sklearn_fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # counted below via n_iter_
            clf = LogisticRegression(C=args.C, max_iter=args.max_iter).fit(train_x.numpy(), train_labels)
        return clf.predict(test_x.numpy()), int(clf.n_iter_[0])

    def ours():
        weight, bias = fit_linear(
            train_x,
            torch.as_tensor(train_labels),
            50,
            multilabel=False,
            lr=1.0,
            weight_decay=weight_decay,
            max_iter=args.max_iter,
            seed=0,
        )
        return (test_x @ weight + bias).argmax(1).numpy()

    print(f"train {train.shape}, test {test.shape}, C = {args.C} (weight decay {weight_decay:.2e})")
    sk_times, (sk_pred, sk_iter) = repeat(sklearn_fit, args.runs)
    our_times, our_pred = repeat(ours, args.runs)
    sk_acc, our_acc = float(np.mean(sk_pred == test_labels)), float(np.mean(our_pred == test_labels))
    print(describe(f"sklearn LogisticRegression(lbfgs), {sk_iter} iterations", sk_times))
    print(describe("ours (fit_linear, L-BFGS in torch)", our_times))
    ratio = summary(sk_times)["median"] / summary(our_times)["median"]
    gap = abs(sk_acc - our_acc) * 100
    print(f"test accuracy: sklearn {sk_acc:.4f}, ours {our_acc:.4f} (gap {gap:.2f} points, goal <= 0.5)")
    print(f"speed-up over sklearn (median/median): {ratio:.1f}x (goal >= 2x)")
    write_result(
        "linear",
        {
            "task": f"{args.train} x 768 train, {args.test} test, 50 classes, C={args.C}, max_iter={args.max_iter}",
            "sklearn_s": summary(sk_times),
            "ours_s": summary(our_times),
            "sklearn_accuracy": sk_acc,
            "ours_accuracy": our_acc,
            "accuracy_gap_points": gap,
            "speedup": ratio,
            "goal": ">= 2x, accuracy within 0.5 points",
        },
    )
    if gap > 0.5:
        raise SystemExit("test accuracies differ by more than 0.5 points")


if __name__ == "__main__":
    main()
