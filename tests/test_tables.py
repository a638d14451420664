"""Paper tables from a hand-made results file, and the replicate statistics behind them."""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from acft.report.stats import (
    inference_units,
    paired_test,
    paired_unit_deltas,
    sign_flip_p,
    summarize,
    t_interval,
)
from acft.report.tables import render_tables
from acft.results import make_rows, validate_rows

sys.path.insert(0, str(Path(__file__).resolve().parent))
from schema_defaults import filled  # noqa: E402

torch.set_num_threads(1)

DATA = Path(__file__).resolve().parent / "data"
SETTINGS = {
    "knn": {"k": [1, 5], "temperature": 0.07},
    "linear": {
        "weight_decay_grid": [0.0, 0.001],
        "max_iter": 50,
        "probe_seeds": [0, 1],
    },
    "geometry": {"max_clips": 100, "seed": 0},
}
BASELINES = {"frozen": ["frozen"], "supervised": ["ce", "bce"]}

# Hand computation for tests/data/expected_table.md (fold 0, tuning seeds 0-2; sample std, ddof = 1):
#   frozen: one replicate per cell -> the value alone; no head rows -> "n/a".
#   ce     linear acc   .70 .72 .74 -> mean .720, std sqrt((.02² + 0 + .02²) / 2) = .020
#          linear F1    .65 .66 .67 -> .660 ± .010        kNN maj acc .69 .70 .71 -> .700 ± .010
#          kNN w acc    .70 .71 .72 -> .710 ± .010        kNN w F1    .64 .65 .66 -> .650 ± .010
#          head acc     .75 .76 .77 -> .760 ± .010
#   supcon linear acc   probe seeds averaged first: (.79+.81)/2=.80, (.83+.83)/2=.83, (.85+.87)/2=.86
#                       -> .830, std sqrt((.03² + 0 + .03²) / 2) = .030
#          linear F1    no rows -> "n/a"                   kNN maj acc .79 .80 .81 -> .800 ± .010
#          kNN w acc    .70 .71 .72 -> .710 ± .010 (ties ce: both bold)
#          kNN w F1     .76 .78 .80 -> .780 ± .020        head acc    .74 .75 .76 -> .750 ± .010 (ce bold)


def small_results() -> pd.DataFrame:
    return validate_rows(pd.read_csv(DATA / "results_small.csv", dtype={"layer": str, "shots": str}))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("tables")
    paths = render_tables(
        small_results(),
        out,
        settings=SETTINGS,
        method_order=["frozen", "ce", "bce", "supcon"],
        baselines=BASELINES,
    )
    return out, paths


def test_markdown_equals_the_hand_made_table(rendered):
    out, _ = rendered
    assert (out / "toy.md").read_text() == (DATA / "expected_table.md").read_text()


def test_every_table_file_is_written_and_returned(rendered):
    out, paths = rendered
    stems = ["toy", "toy_deltas", "toy_geometry", "toy_fewshot"]
    expected = [out / f"{stem}.{ext}" for stem in stems for ext in ("md", "tex", "csv")] + [
        out / "toy_long.csv"
    ]
    assert paths == expected
    assert all(path.stat().st_size > 0 for path in paths)
    # no geometry or few-shot rows in this file: a note, never an empty or missing file
    assert "No geometry rows." in (out / "toy_geometry.md").read_text()
    assert "No few-shot rows" in (out / "toy_fewshot.md").read_text()


def test_latex_has_booktabs_rules_bold_and_escapes(rendered):
    out, _ = rendered
    tex = (out / "toy.tex").read_text()
    lines = tex.splitlines()
    assert lines.index(r"\toprule") < lines.index(r"\midrule") < lines.index(r"\bottomrule")
    assert r"\begin{tabular}{llrrrrrr}" in lines
    assert (
        r"bb & supcon & \textbf{0.830 $\pm$ 0.030} & n/a & \textbf{0.800 $\pm$ 0.010} & "
        r"\textbf{0.710 $\pm$ 0.010} & \textbf{0.780 $\pm$ 0.020} & 0.750 $\pm$ 0.010 \\"
    ) in lines
    assert r"bb & frozen & 0.600 & 0.550 & 0.580 & 0.590 & 0.540 & n/a \\" in lines
    assert r"toy\_long.csv" in tex and r"95 \% Student-t" in tex and r"exp(s/$\tau$)" in tex


def test_csv_holds_mean_std_t_interval_and_n(rendered):
    out, _ = rendered
    # "n/a" is a cell text here, not a missing value
    cells = pd.read_csv(out / "toy.csv", keep_default_na=False, na_values=[""]).set_index(
        ["method", "column"]
    )
    ce = cells.loc[("ce", "Linear acc")]
    # t_{0.975, 2} = 4.302653 (t table); half width = 4.302653 * 0.02 / sqrt(3) = 0.049683
    assert ce["mean"] == pytest.approx(0.72) and ce["std"] == pytest.approx(0.02) and ce["n"] == 3
    assert (ce["ci_low"], ce["ci_high"]) == pytest.approx((0.72 - 0.049683, 0.72 + 0.049683), abs=1e-6)
    frozen = cells.loc[("frozen", "Linear acc")]
    assert frozen["n"] == 1 and math.isnan(frozen["std"]) and math.isnan(frozen["ci_low"])
    missing = cells.loc[("supcon", "Linear macro-F1")]
    assert missing["n"] == 0 and missing["cell"] == "n/a"


def test_long_csv_keeps_the_k_sweep_and_grid_rows(rendered):
    out, _ = rendered
    long = pd.read_csv(out / "toy_long.csv", dtype={"layer": str, "shots": str})
    k1 = long[(long["method"] == "frozen") & (long["probe"] == "knn_majority") & (long["k"] == 1)]
    assert k1["mean"].tolist() == [0.5]
    chosen = long[(long["method"] == "ce") & (long["metric"] == "chosen_lr")]
    assert chosen["mean"].iloc[0] == pytest.approx(0.7) and chosen["n"].iloc[0] == 3
    assert list(dict.fromkeys(long["method"])) == ["frozen", "ce", "supcon"]


def test_deltas_pair_by_fold_and_seed(rendered):
    out, _ = rendered
    deltas = pd.read_csv(out / "toy_deltas.csv").set_index(["method", "reference", "column"])
    # supcon - ce, linear acc, paired by seed (the unit on a fixed split): .80-.70, .83-.72, .86-.74
    # = .10, .11, .12; t-interval .11 ± t_{0.975,2} * .01 / sqrt(3) = .11 ± 4.302653 * .005774 = .11 ± .024841
    test = deltas.loc[("supcon", "ce", "Linear acc")]
    assert test["mean_delta"] == pytest.approx(0.11) and test["n"] == 3 and test["unit"] == "tuning seed"
    assert (test["ci_low"], test["ci_high"]) == pytest.approx((0.11 - 0.024841, 0.11 + 0.024841), abs=1e-6)
    # sign-flip test: of the 8 sign patterns of (.10, .11, .12) only all-plus and all-minus reach |mean| .11
    assert test["p_value"] == pytest.approx(2 / 8)
    # supcon - frozen, kNN w. acc: every seed against the one frozen value of fold 0: .11, .12, .13
    assert deltas.loc[("supcon", "frozen", "kNN@5 acc (w.)"), "mean_delta"] == pytest.approx(0.12)
    # identical columns: delta 0 and p = 1
    tie = deltas.loc[("supcon", "ce", "kNN@5 acc (w.)")]
    assert tie["mean_delta"] == pytest.approx(0.0, abs=1e-12) and tie["p_value"] == 1.0
    # head vs frozen is not applicable (the frozen backbone has no head); ce is not compared with itself
    assert ("ce", "frozen", "Head acc") not in deltas.index
    # every method against every method above it: ce - frozen, supcon - frozen, supcon - ce
    pairs = set(deltas.index.droplevel("column"))
    assert pairs == {("ce", "frozen"), ("supcon", "frozen"), ("supcon", "ce")}
    # the missing supcon linear macro-F1 gives a row with no pairs, rendered as n/a
    assert deltas.loc[("supcon", "ce", "Linear macro-F1"), "n"] == 0
    md = (out / "toy_deltas.md").read_text()
    assert "| bb | supcon | ce | Linear acc | +0.110 | [+0.085, +0.135] | 0.250 | 3 |" in md
    assert "n = tuning seeds (the unit of inference on a fixed split)" in md
    assert "| bb | supcon | ce | kNN@5 acc (w.) | 0.000 | [0.000, 0.000] | 1.000 | 3 |" in md
    assert "| bb | supcon | ce | Linear macro-F1 | n/a | n/a | n/a | 0 |" in md


def test_output_is_deterministic(rendered, tmp_path):
    out, paths = rendered
    again = render_tables(
        small_results(),
        tmp_path,
        settings=SETTINGS,
        method_order=["frozen", "ce", "bce", "supcon"],
        baselines=BASELINES,
    )
    for first, second in zip(paths, again, strict=True):
        assert first.read_bytes() == second.read_bytes(), first.name


def _rows(records, **common):
    defaults = {"dataset": "toy", "fold": 0, "tune_seed": 0, "config_hash": "h"}
    return make_rows(records, **{**defaults, **common})


def test_frozen_pairs_with_every_seed_of_its_fold_and_single_pair_has_no_p(tmp_path):
    frames = []
    for fold, frozen_value in [(1, 0.5), (2, 0.6)]:
        frames.append(
            _rows(
                [{"probe": "linear", "metric": "accuracy", "value": frozen_value}],
                backbone="bb",
                method="frozen",
                fold=fold,
            )
        )
        for seed in (0, 1):
            value = frozen_value + 0.1 + 0.01 * seed
            frames.append(
                _rows(
                    [{"probe": "linear", "metric": "accuracy", "value": value}],
                    backbone="bb",
                    method="supcon",
                    fold=fold,
                    tune_seed=seed,
                )
            )
    # one replicate of ce only: a single pair with supcon
    frames.append(
        _rows([{"probe": "linear", "metric": "accuracy", "value": 0.55}], backbone="bb", method="ce", fold=1)
    )
    render_tables(pd.concat(frames), tmp_path, settings={}, baselines=BASELINES, sign_flips=500)
    deltas = pd.read_csv(tmp_path / "toy_deltas.csv").set_index(["method", "reference", "column"])
    # k-fold: the unit is the fold; supcon's fold means .605 and .705 against frozen .5 and .6
    frozen = deltas.loc[("supcon", "frozen", "Linear acc")]
    assert frozen["n"] == 2 and frozen["mean_delta"] == pytest.approx(0.105) and frozen["unit"] == "fold"
    # ce ran fold 1 only: one unit, .605 - .55
    single = deltas.loc[("supcon", "ce", "Linear acc")]
    assert single["n"] == 1 and single["mean_delta"] == pytest.approx(0.055) and math.isnan(single["p_value"])
    md = (tmp_path / "toy_deltas.md").read_text()
    assert "| bb | supcon | ce | Linear acc | +0.055 | n too small | n/a | 1 |" in md
    assert "n = folds (the unit of inference)" in md
    main = pd.read_csv(tmp_path / "toy.csv").set_index(["method", "column"])
    assert main.loc[("supcon", "Linear acc"), "n"] == 2  # two folds, not four (fold, seed) runs
    assert (
        "mean ± sample std over the folds, the unit of inference (folds 1, 2; n = 2)"
        in (tmp_path / "toy.md").read_text()
    )


def test_bold_is_per_backbone_and_latex_separates_backbones(tmp_path):
    frames = [
        _rows([{"probe": "linear", "metric": "accuracy", "value": value}], backbone=backbone, method=method)
        for backbone, method, value in [
            ("a", "frozen", 0.9),
            ("a", "supcon", 0.8),
            ("b", "frozen", 0.2),
            ("b", "supcon", 0.3),
        ]
    ]
    render_tables(pd.concat(frames), tmp_path, settings={}, baselines=BASELINES)
    md = (tmp_path / "toy.md").read_text()
    assert "| a | frozen | **0.900** |" in md and "| a | supcon | 0.800 |" in md
    assert "| b | frozen | 0.200 |" in md and "| b | supcon | **0.300** |" in md
    lines = (tmp_path / "toy.tex").read_text().splitlines()
    body = lines[lines.index(r"\midrule") + 1 : lines.index(r"\bottomrule")]
    assert [line.split(" & ")[0] for line in body] == ["a", "a", r"\midrule", "b", "b"]


def test_multilabel_columns_method_order_geometry_and_fewshot(tmp_path):
    records = [
        {"probe": "linear", "metric": "map", "value": 0.4},
        {"probe": "knn_weighted", "k": 10, "metric": "map", "value": 0.35},
        {"probe": "knn_weighted", "k": 10, "metric": "map", "value": 0.2, "shots": "5"},
        {"probe": "knn_weighted", "k": 10, "metric": "map", "value": 0.1, "shots": "1"},
        {"probe": "knn_weighted", "k": 10, "metric": "map", "value": 0.25, "shots": "10"},
        {"probe": "geometry", "metric": "uniformity", "value": -2.0},
        {"probe": "geometry", "metric": "alignment", "value": 0.5},
        {"probe": "geometry", "metric": "spread", "value": 1.5},
    ]
    frames = [
        _rows(records, backbone="bb", method=m) for m in ("jaccard_supcon", "bce", "frozen", "external")
    ]
    render_tables(
        pd.concat(frames),
        tmp_path,
        settings={"knn": {"shot_seed": 3}},
        headline_k=10,
        method_order=["frozen", "supcon", "jaccard_supcon", "bce"],
        baselines={"frozen": "frozen", "supervised": ["bce"]},
    )
    md = (tmp_path / "toy.md").read_text()
    assert "| Backbone | Method | Linear mAP | Linear macro-F1 | kNN@10 mAP (maj.) | kNN@10 mAP (w.) |" in md
    methods = [line.split(" | ")[1] for line in md.splitlines() if line.startswith("| bb |")]
    assert methods == [
        "frozen",
        "bce",
        "jaccard_supcon",
        "external",
    ]  # frozen, baselines, config order, unknown
    assert "mAP: macro average precision" in md
    geometry = (tmp_path / "toy_geometry.md").read_text()
    assert "| Backbone | Method | Alignment | Uniformity | spread |" in geometry
    assert "| bb | frozen | 0.500 | -2.000 | 1.500 |" in geometry and "**" not in geometry
    fewshot = (tmp_path / "toy_fewshot.md").read_text()
    assert "| Backbone | Method | Probe | 1 shot | 5 shots | 10 shots | all |" in fewshot
    assert "| bb | bce | kNN@10 mAP (w.) | 0.100 | 0.200 | 0.250 | 0.350 |" in fewshot
    assert "(seed 3)" in fewshot


def test_empty_results_are_an_error(tmp_path):
    with pytest.raises(ValueError, match="no result rows"):
        render_tables(small_results().iloc[:0], tmp_path, settings={})


# ---- statistics ----


def test_summarize_matches_hand_values_and_handles_few_replicates():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, std sqrt(5/3) = 1.290994; t_{0.975,3} = 3.182446 -> half width 3.182446 * 1.290994 / 2
    assert s["mean"] == 2.5 and s["std"] == pytest.approx(1.290994, abs=1e-6) and s["n"] == 4
    assert s["ci_high"] - s["mean"] == pytest.approx(3.182446 * 1.290994 / 2, abs=1e-5)
    one = summarize([0.3, math.nan])
    assert one["n"] == 1 and one["mean"] == 0.3 and math.isnan(one["std"])
    assert summarize([])["n"] == 0 and math.isnan(summarize([])["mean"])


def _sign_flip_p(deltas):
    """Brute-force paired randomisation test: every assignment of signs to the pairs."""
    observed = abs(np.mean(deltas))
    flips = [
        abs(np.mean(np.array(signs) * deltas)) for signs in itertools.product((1, -1), repeat=len(deltas))
    ]
    return np.mean(np.array(flips) >= observed - 1e-12)


def test_sign_flip_p_value_monte_carlo_beyond_exact_enumeration():
    deltas = np.random.default_rng(3).normal(0.01, 0.03, size=18)  # 2^18 patterns: sampled, not enumerated
    result = paired_test(deltas, flips=20_000, seed=2)
    assert result["p_value"] == pytest.approx(_sign_flip_p(deltas), abs=0.015)  # MC error ~ sqrt(p(1-p)/B)


def test_monte_carlo_sign_flip_counts_the_observed_pattern():
    # 20 positive deltas: no random pattern is as extreme, yet p is (0 + 1) / (flips + 1), never 0
    result = paired_test(np.linspace(0.1, 0.2, 20), flips=999, seed=0)
    assert result["p_value"] == pytest.approx(1 / 1000)


def test_paired_test_is_a_t_interval_and_an_exact_sign_flip():
    deltas = np.array([0.05, -0.01, 0.03, 0.02, 0.04, -0.02])
    result = paired_test(deltas)
    half = 2.570582 * deltas.std(ddof=1) / math.sqrt(6)  # t_{0.975, 5} = 2.570582 (t table)
    assert result["mean_delta"] == pytest.approx(deltas.mean()) and result["n"] == 6
    assert (result["ci_low"], result["ci_high"]) == pytest.approx(
        (deltas.mean() - half, deltas.mean() + half)
    )
    assert result["p_value"] == pytest.approx(_sign_flip_p(deltas))


def test_paired_test_extremes_and_determinism():
    constant = paired_test([0.1] * 5)
    # five equal positive deltas: only all-plus and all-minus of 32 sign patterns are as extreme
    assert constant["p_value"] == pytest.approx(2 / 32) and constant["ci_low"] == pytest.approx(0.1)
    symmetric = paired_test([-0.2, -0.1, 0.1, 0.2])
    assert symmetric["mean_delta"] == pytest.approx(0, abs=1e-12) and symmetric["p_value"] == 1.0
    many = np.random.default_rng(0).normal(size=20)
    assert paired_test(many, seed=4) == paired_test(many, seed=4)
    single = paired_test([0.2])
    assert single["mean_delta"] == 0.2 and math.isnan(single["p_value"]) and single["n"] == 1
    assert math.isnan(single["ci_low"])
    with pytest.raises(ValueError, match="finite"):
        paired_test([0.1, math.nan])


def _replicates(values: np.ndarray, folds) -> pd.Series:
    """[folds, seeds] values -> a Series indexed by (fold, tune_seed)."""
    index = pd.MultiIndex.from_product([folds, range(values.shape[1])], names=["fold", "tune_seed"])
    return pd.Series(values.ravel(), index=index)


def test_units_are_fold_means_on_kfold_data_and_seeds_on_a_fixed_split():
    values = np.array([[0.1, 0.2, 0.3], [0.5, 0.5, 0.8]])
    kfold = inference_units(_replicates(values, [1, 2]))
    assert kfold.index.name == "fold" and kfold.to_numpy() == pytest.approx([0.2, 0.6])
    fixed = inference_units(_replicates(values[:1], [0]))
    assert fixed.index.name == "tune_seed" and fixed.to_numpy() == pytest.approx([0.1, 0.2, 0.3])
    # the frozen reference (one run per fold) against fold means; on a fixed split against every seed
    frozen = pd.Series(
        [0.0, 0.5], index=pd.MultiIndex.from_product([[1, 2], [0]], names=["fold", "tune_seed"])
    )
    kfold_deltas = paired_unit_deltas(_replicates(values, [1, 2]), frozen, shared_reference=True)
    assert kfold_deltas == pytest.approx([0.2, 0.1])
    frozen0 = pd.Series([0.1], index=pd.MultiIndex.from_tuples([(0, 0)], names=["fold", "tune_seed"]))
    fixed_deltas = paired_unit_deltas(_replicates(values[:1], [0]), frozen0, shared_reference=True)
    assert fixed_deltas == pytest.approx([0.0, 0.1, 0.2])


def _simulated_fold_deltas(rng, effect: float, n_experiments: int, folds: int, seeds: int) -> np.ndarray:
    """[experiments, folds, seeds] paired deltas: a fold-level and a seed-level component of equal variance."""
    fold_effect = rng.normal(size=(n_experiments, folds, 1))
    seed_noise = rng.normal(size=(n_experiments, folds, seeds))
    return effect + fold_effect + seed_noise


def test_kfold_inference_holds_its_level_under_the_null_and_detects_an_effect():
    rng = np.random.default_rng(0)
    deltas = _simulated_fold_deltas(rng, 0.0, 4000, folds=5, seeds=3)
    # what the tables do to one experiment: fold means, then the paired test over folds
    one = paired_unit_deltas(_replicates(deltas[0], range(1, 6)), _replicates(0 * deltas[0], range(1, 6)),
                             shared_reference=False)  # fmt: skip
    assert one == pytest.approx(deltas[0].mean(axis=1))
    fold_means = deltas.mean(axis=2)  # [experiments, folds]
    mean, _, half = t_interval(fold_means)
    t_rejects = np.abs(mean) > half
    flip_rejects = sign_flip_p(fold_means) <= 0.05
    assert t_rejects.mean() <= 0.06 and flip_rejects.mean() <= 0.06
    # the pseudo-replicated analysis (15 (fold, seed) pairs as independent units) is what this replaces
    pairs = deltas.reshape(len(deltas), -1)
    naive_mean, _, naive_half = t_interval(pairs)
    assert (np.abs(naive_mean) > naive_half).mean() > 0.10

    # a true effect of 2 fold-level standard deviations is detected by the t-interval over 5 folds, and by
    # the sign-flip test over 10 folds (5 folds cannot go below p = 2/32 = 0.0625)
    effect = _simulated_fold_deltas(rng, 2.0, 2000, folds=5, seeds=3).mean(axis=2)
    effect_mean, _, effect_half = t_interval(effect)
    assert (effect_mean - effect_half > 0).mean() > 0.7
    ten = _simulated_fold_deltas(rng, 2.0, 2000, folds=10, seeds=3).mean(axis=2)
    assert (sign_flip_p(ten) <= 0.05).mean() > 0.8


def test_contrastive_variants_are_compared_with_each_other(tmp_path):
    frames = [
        _rows(
            [{"probe": "linear", "metric": "map", "value": value + 0.01 * seed}],
            backbone="bb",
            method=method,
            tune_seed=seed,
        )  # fmt: skip
        for method, value in [("bce", 0.5), ("supcon", 0.55), ("jaccard_supcon", 0.6)]
        for seed in (0, 1, 2)
    ]
    render_tables(pd.concat(frames), tmp_path, settings={}, method_order=["bce", "supcon", "jaccard_supcon"])
    deltas = pd.read_csv(tmp_path / "toy_deltas.csv").set_index(["method", "reference", "column"])
    assert deltas.loc[("jaccard_supcon", "supcon", "Linear mAP"), "mean_delta"] == pytest.approx(0.05)
    assert deltas.loc[("jaccard_supcon", "bce", "Linear mAP"), "mean_delta"] == pytest.approx(0.1)


def test_tuning_notes_name_budget_sampler_and_selection(tmp_path):
    frames = [_rows([{"probe": "linear", "metric": "accuracy", "value": 0.5}], backbone="bb", method=m)
              for m in ("frozen", "ce", "supcon")]  # fmt: skip
    settings = {
        "tune": {"epochs": 8, "classes_per_batch": 16, "clips_per_class": 4, "lr_candidates": [3e-4]},
        "methods": filled(
            {"methods": {"frozen": {"loss": "none"}, "ce": {"loss": "ce"}, "supcon": {"loss": "supcon"}}}
        )["methods"],
    }
    render_tables(pd.concat(frames), tmp_path, settings=settings)
    md = (tmp_path / "toy.md").read_text()
    assert "Tuning budget, equal for every method: 8 epochs of ceil(N_train / B) batches of B = 16×4" in md
    assert (
        "ce: uniformly shuffled batches (every train clip once per epoch), lr and epoch chosen on val head "
        in md
    )
    assert "supcon: class-balanced P×m batches, lr and epoch chosen on val kNN@5 accuracy (w.)" in md
