"""Tuning losses against brute-force per-anchor loops written independently of acft.tune.losses."""

import inspect
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from acft.methods import HEAD_LOSSES, LOSS_PARAMS
from acft.plan import ConfigError
from acft.tune.losses import (
    LOSSES,
    check_label_kind,
    jaccard_weights,
    mulsupcon,
    resolve_method,
    shared_label_weights,
    weighted_supcon,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from schema_defaults import method  # noqa: E402

torch.set_num_threads(1)


# ---------------------------------------------------------------- references (plain Python over label sets)


def ref_supcon(z: np.ndarray, label_sets: list[set], tau: float, pair_weight) -> float:
    """Khosla et al. 2020 L_out, one anchor at a time, with per-pair weights normalised per anchor."""
    anchors = []
    for i in range(len(z)):
        weights = {j: pair_weight(label_sets[i], label_sets[j]) for j in range(len(z)) if j != i}
        total = sum(weights.values())
        if total == 0:
            continue
        denominator = sum(math.exp(float(z[i] @ z[a]) / tau) for a in range(len(z)) if a != i)
        loss = 0.0
        for j, w in weights.items():
            if w > 0:
                loss -= w / total * math.log(math.exp(float(z[i] @ z[j]) / tau) / denominator)
        anchors.append(loss)
    return sum(anchors) / len(anchors) if anchors else 0.0


def ref_count_normalised(z: np.ndarray, label_sets: list[set], tau: float, threshold: float) -> float:
    """Jaccard weights J_ij kept where J_ij >= threshold, each anchor's sum divided by its positive count."""
    anchors = []
    for i in range(len(z)):
        weights = {j: jaccard(threshold)(label_sets[i], label_sets[j]) for j in range(len(z)) if j != i}
        positives = [j for j, w in weights.items() if w > 0]
        if not positives:
            continue
        denominator = sum(math.exp(float(z[i] @ z[a]) / tau) for a in range(len(z)) if a != i)
        loss = -sum(
            weights[j] * math.log(math.exp(float(z[i] @ z[j]) / tau) / denominator) for j in positives
        )
        anchors.append(loss / len(positives))
    return sum(anchors) / len(anchors) if anchors else 0.0


def ref_mulsupcon(z: np.ndarray, label_sets: list[set], tau: float) -> float:
    """Zhang & Wu 2024: one anchor per (clip, label); positives = the other clips carrying that label."""
    anchors = []
    for i in range(len(z)):
        denominator = sum(math.exp(float(z[i] @ z[a]) / tau) for a in range(len(z)) if a != i)
        for label in sorted(label_sets[i]):
            positives = [j for j in range(len(z)) if j != i and label in label_sets[j]]
            if not positives:
                continue
            terms = [math.log(math.exp(float(z[i] @ z[j]) / tau) / denominator) for j in positives]
            anchors.append(-sum(terms) / len(positives))
    return sum(anchors) / len(anchors) if anchors else 0.0


def shares_label(a: set, b: set) -> float:
    return 1.0 if a & b else 0.0


def jaccard(threshold=0.0, power=1.0):
    def weight(a: set, b: set) -> float:
        if not a | b:
            return 0.0
        j = len(a & b) / len(a | b)
        return j**power if j > 0 and j >= threshold else 0.0

    return weight


def ref_ce(logits: np.ndarray, targets: list[int]) -> float:
    total = 0.0
    for row, t in zip(logits, targets, strict=True):
        total += -(row[t] - math.log(sum(math.exp(v) for v in row)))
    return total / len(targets)


def ref_bce(logits: np.ndarray, multi_hot: np.ndarray) -> float:
    total = 0.0
    for row, target in zip(logits, multi_hot, strict=True):
        for x, y in zip(row, target, strict=True):
            p = 1 / (1 + math.exp(-x))
            total += -(y * math.log(p) + (1 - y) * math.log(1 - p))
    return total / multi_hot.size


# ---------------------------------------------------------------- helpers


def unit(rng, n, d=8):
    z = rng.normal(size=(n, d))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def multi_hot(label_sets, n_classes):
    out = np.zeros((len(label_sets), n_classes))
    for row, labels in enumerate(label_sets):
        out[row, list(labels)] = 1
    return out


def random_label_sets(rng, n, n_classes, max_labels=3, p_empty=0.15):
    sets = []
    for _ in range(n):
        if rng.random() < p_empty:
            sets.append(set())
        else:
            sets.append(
                set(rng.choice(n_classes, size=rng.integers(1, max_labels + 1), replace=False).tolist())
            )
    return sets


def supcon_of(z, sets, n_classes, tau, weights_fn):
    mh = torch.tensor(multi_hot(sets, n_classes))
    return weighted_supcon(torch.tensor(z), weights_fn(mh), tau).item()


# ---------------------------------------------------------------- SupCon and Jaccard-SupCon


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_supcon_single_label_matches_reference(seed, tau):
    rng = np.random.default_rng(seed)
    z = unit(rng, 12)
    sets = [{int(c)} for c in rng.integers(0, 4, size=12)]
    expected = ref_supcon(z, sets, tau, shares_label)
    assert supcon_of(z, sets, 4, tau, shared_label_weights) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_supcon_multilabel_positive_is_any_shared_label(seed):
    rng = np.random.default_rng(seed)
    z = unit(rng, 14)
    sets = random_label_sets(rng, 14, 6)
    expected = ref_supcon(z, sets, 0.1, shares_label)
    assert supcon_of(z, sets, 6, 0.1, shared_label_weights) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("threshold", "power"), [(0.0, 1.0), (0.3, 1.0), (0.0, 2.0), (0.5, 0.5)])
def test_jaccard_supcon_matches_reference(seed, threshold, power):
    rng = np.random.default_rng(seed)
    z = unit(rng, 14)
    sets = random_label_sets(rng, 14, 5)
    expected = ref_supcon(z, sets, 0.2, jaccard(threshold, power))
    got = supcon_of(z, sets, 5, 0.2, lambda mh: jaccard_weights(mh, threshold, power))
    assert got == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_count_normalised_jaccard_supcon_matches_reference(seed, threshold, dtype):
    rng = np.random.default_rng(seed)
    z = unit(rng, 14)
    sets = random_label_sets(rng, 14, 5)
    expected = ref_count_normalised(z, sets, 0.2, threshold)
    got = LOSSES["jaccard_supcon_count"].compute(
        {"projection": torch.tensor(z, dtype=dtype)}, torch.tensor(multi_hot(sets, 5), dtype=dtype),
        multilabel=True, temperature=0.2, jaccard_threshold=threshold,
    )  # fmt: skip
    assert got.item() == pytest.approx(expected, rel=1e-10 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_mulsupcon_matches_per_anchor_loop(seed, dtype):
    rng = np.random.default_rng(seed)
    z = unit(rng, 14)
    sets = random_label_sets(rng, 14, 6)
    got = LOSSES["mulsupcon"].compute(
        {"projection": torch.tensor(z, dtype=dtype)}, torch.tensor(multi_hot(sets, 6), dtype=dtype),
        multilabel=True, temperature=0.1,
    )  # fmt: skip
    assert got.item() == pytest.approx(
        ref_mulsupcon(z, sets, 0.1), rel=1e-10 if dtype == torch.float64 else 1e-5
    )


@pytest.mark.parametrize("seed", range(3))
def test_new_multilabel_losses_equal_supcon_on_one_hot(seed):
    rng = np.random.default_rng(seed)
    z = torch.tensor(unit(rng, 16))
    mh = F.one_hot(torch.tensor(rng.integers(0, 5, size=16)), 5).double()
    supcon = weighted_supcon(z, shared_label_weights(mh), 0.1)
    assert mulsupcon(z, mh, 0.1).item() == pytest.approx(supcon.item(), rel=1e-12)
    count = LOSSES["jaccard_supcon_count"].compute(
        {"projection": z}, mh, multilabel=False, temperature=0.1, jaccard_threshold=0.5
    )
    assert count.item() == pytest.approx(supcon.item(), rel=1e-12)


@pytest.mark.parametrize("sets", [[{0}, {1}, {2}], [set(), set()], [{0}]])
def test_new_losses_without_positives_are_finite_zero_with_graph(sets):
    z = torch.randn(len(sets), 8, dtype=torch.float64, requires_grad=True)
    mh = torch.tensor(multi_hot(sets, 3))
    for loss in (mulsupcon(F.normalize(z, dim=1), mh, 0.1),
                 weighted_supcon(F.normalize(z, dim=1), jaccard_weights(mh, 0.5), 0.1, normalise_by_count=True)):  # fmt: skip
        assert torch.isfinite(loss) and loss.item() == 0.0
        loss.backward()
        assert (z.grad == 0).all()


def test_mulsupcon_gradcheck_float64():
    rng = np.random.default_rng(5)
    mh = torch.tensor(multi_hot(random_label_sets(rng, 7, 3, p_empty=0.2), 3))
    z = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: mulsupcon(F.normalize(x, dim=1), mh, 0.3), (z,))


def test_jaccard_weights_known_values():
    sets = [{0, 1}, {1, 2}, {0, 1}, set(), {3}]
    w = jaccard_weights(torch.tensor(multi_hot(sets, 4)))
    expected = torch.tensor(
        [
            [0, 1 / 3, 1, 0, 0],
            [1 / 3, 0, 1 / 3, 0, 0],
            [1, 1 / 3, 0, 0, 0],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0],
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(w, expected)
    # power and threshold: 1/3 ** 2 = 1/9; threshold 0.5 removes the 1/3 pairs.
    assert jaccard_weights(torch.tensor(multi_hot(sets, 4)), power=2.0)[0, 1].item() == pytest.approx(1 / 9)
    assert jaccard_weights(torch.tensor(multi_hot(sets, 4)), threshold=0.5)[0, 1].item() == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_jaccard_supcon_equals_supcon_on_one_hot(seed):
    rng = np.random.default_rng(seed)
    z = torch.tensor(unit(rng, 16))
    mh = F.one_hot(torch.tensor(rng.integers(0, 5, size=16)), 5).double()
    assert torch.equal(shared_label_weights(mh), jaccard_weights(mh))
    supcon = LOSSES["supcon"].compute({"projection": z}, mh, multilabel=False, temperature=0.1)
    jac = LOSSES["jaccard_supcon"].compute(
        {"projection": z}, mh, multilabel=False, temperature=0.1, jaccard_threshold=0.0, jaccard_power=1.0
    )
    assert torch.equal(supcon, jac)


@pytest.mark.parametrize(
    "sets",
    [
        [{0}, {1}, {2}, {3}],  # all different classes
        [{0}],  # a single clip (the classic partial last batch)
        [set(), set(), set()],  # unlabelled clips only
        [{0}, set(), {1}],
    ],
)
@pytest.mark.parametrize("weights_fn", [shared_label_weights, jaccard_weights])
def test_batch_without_positives_is_finite_zero_with_graph(sets, weights_fn):
    z = torch.randn(len(sets), 8, dtype=torch.float64, requires_grad=True)
    loss = weighted_supcon(F.normalize(z, dim=1), weights_fn(torch.tensor(multi_hot(sets, 4))), 0.1)
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(z.grad).all() and (z.grad == 0).all()


def test_only_anchors_with_positives_are_averaged():
    rng = np.random.default_rng(7)
    z = unit(rng, 6)
    sets = [{0}, {0}, {1}, {2}, set(), {0}]  # anchors 2, 3, 4 have no positive but stay in denominators
    expected = ref_supcon(z, sets, 0.1, shares_label)
    assert supcon_of(z, sets, 3, 0.1, shared_label_weights) == pytest.approx(expected, rel=1e-10)
    # denominators hold every other clip: dropping the clips without positives changes the loss
    keep = [0, 1, 5]
    assert expected != pytest.approx(ref_supcon(z[keep], [sets[i] for i in keep], 0.1, shares_label))


@pytest.mark.parametrize("weights_fn", [shared_label_weights, lambda mh: jaccard_weights(mh, 0.0, 1.5)])
def test_gradcheck_float64(weights_fn):
    rng = np.random.default_rng(3)
    sets = random_label_sets(rng, 7, 3, p_empty=0.2)
    weights = weights_fn(torch.tensor(multi_hot(sets, 3)))
    z = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: weighted_supcon(F.normalize(x, dim=1), weights, 0.3), (z,))


# ---------------------------------------------------------------- ce, bce, hybrid


def test_ce_bce_and_hybrid_match_references():
    rng = np.random.default_rng(11)
    logits = rng.normal(size=(9, 4))
    targets = rng.integers(0, 4, size=9)
    one_hot = np.eye(4)[targets]
    outputs = {"logits": torch.tensor(logits)}
    ce = LOSSES["ce"].compute(outputs, torch.tensor(one_hot), multilabel=False)
    assert ce.item() == pytest.approx(ref_ce(logits, targets.tolist()), rel=1e-10)

    sets = random_label_sets(rng, 9, 4)
    mh = multi_hot(sets, 4)
    bce = LOSSES["bce"].compute(outputs, torch.tensor(mh), multilabel=True)
    assert bce.item() == pytest.approx(ref_bce(logits, mh), rel=1e-10)

    z = unit(rng, 9)
    both = {"logits": torch.tensor(logits), "projection": torch.tensor(z)}
    hybrid = LOSSES["supcon_ce"].compute(
        both, torch.tensor(one_hot), multilabel=False, temperature=0.1, ce_weight=0.3
    )
    expected = 0.7 * ref_supcon(z, [{int(t)} for t in targets], 0.1, shares_label) + 0.3 * ref_ce(
        logits, targets
    )
    assert hybrid.item() == pytest.approx(expected, rel=1e-10)
    hybrid_multi = LOSSES["supcon_ce"].compute(
        both, torch.tensor(mh), multilabel=True, temperature=0.1, ce_weight=0.3
    )
    expected_multi = 0.7 * ref_supcon(z, sets, 0.1, shares_label) + 0.3 * ref_bce(logits, mh)
    assert hybrid_multi.item() == pytest.approx(expected_multi, rel=1e-10)


# ---------------------------------------------------------------- method configs


def test_resolve_method_reads_the_schema_filled_entry():
    name, loss, params = resolve_method(method("jaccard_supcon", temperature=0.2))
    assert name == "jaccard_supcon" and loss is LOSSES["jaccard_supcon"]
    assert params == {"temperature": 0.2, "jaccard_threshold": 0.0, "jaccard_power": 1.0}
    assert resolve_method(method("ce"))[2] == {}
    # training keys are not loss parameters; a null jaccard_threshold is the loss's own value
    cfg = method("jaccard_supcon_count", views=2)
    assert cfg["jaccard_threshold"] is None and cfg["sampler"] == "auto"
    assert resolve_method(cfg)[2] == {"temperature": 0.1, "jaccard_threshold": 0.5}
    assert (
        resolve_method(method("jaccard_supcon_count", jaccard_threshold=0.25))[2]["jaccard_threshold"] == 0.25
    )


def test_loss_table_names_the_parameters_its_losses_take():
    assert set(LOSSES) == set(LOSS_PARAMS) - {"none"}
    assert set(HEAD_LOSSES) == {name for name, loss in LOSSES.items() if "classifier" in loss.heads}
    for name, loss in LOSSES.items():
        keywords = inspect.signature(loss.compute).parameters
        assert [k for k in keywords if k not in ("outputs", "multi_hot", "multilabel")] == list(
            LOSS_PARAMS[name]
        )


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"loss": "triplet"}, "unknown method loss 'triplet'"),
        ({"loss": "none"}, "frozen"),
        ({"loss": "supcon"}, r"lacks \['temperature'\]"),
    ],
)
def test_resolve_method_rejects_bad_configs(cfg, message):
    with pytest.raises(ValueError, match=message):
        resolve_method(cfg)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"loss": "supcon", "tau": 0.1}, "'tau' was unexpected"),
        ({"loss": "supcon", "temperature": 0.0}, r"methods\.m\.temperature: 0\.0"),
        ({"loss": "supcon_ce", "ce_weight": 1.5}, r"methods\.m\.ce_weight: 1\.5"),
        ({"loss": "jaccard_supcon", "jaccard_threshold": -0.1}, r"methods\.m\.jaccard_threshold"),
        ({"loss": "jaccard_supcon", "jaccard_power": 0}, r"methods\.m\.jaccard_power"),
        ({"loss": "ce", "sampler": "random"}, r"methods\.m\.sampler"),
        ({"loss": "ce", "views": 3}, r"methods\.m\.views"),
    ],
)
def test_the_schema_checks_every_method_value(entry, message):
    with pytest.raises(ConfigError, match=message):
        method(**entry)


def test_label_kind_mismatch_names_the_right_loss():
    with pytest.raises(ValueError, match="multi-label; use loss: bce"):
        check_label_kind("ce", LOSSES["ce"], multilabel=True)
    with pytest.raises(ValueError, match="single-label; use loss: ce"):
        check_label_kind("bce", LOSSES["bce"], multilabel=False)
    for name in ("supcon", "jaccard_supcon", "jaccard_supcon_count", "mulsupcon", "supcon_ce"):
        check_label_kind(name, LOSSES[name], multilabel=True)
        check_label_kind(name, LOSSES[name], multilabel=False)
