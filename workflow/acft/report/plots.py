"""Report figures: kNN metric against k, 2-D maps (PCA and t-SNE) of test embeddings per method, training curves
of many runs, and the curves of one tuning run (drawn by the tune job).

Figures are bare matplotlib ``Figure`` objects rendered by the Agg canvas, so no pyplot state is shared
between calls and the output depends only on the inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..data.splits import roles_for_fold
from ..embeddings import read_embeddings
from ..io import atomic_path
from ..labels import read_vocab
from .stats import summarize

VOTE_STYLES = {"knn_weighted": ("-", "weighted"), "knn_majority": ("--", "majority")}
METRIC_LABELS = {"accuracy": "accuracy", "macro_f1": "macro-F1", "map": "mAP"}
VAL_METRIC_COLUMNS = ("val_metric", "val_knn")  # the spec's name and the name the tuner writes
MAX_LEGEND_CLASSES = 20  # up to this many classes: discrete colours and a legend of class names


def plot_metric_vs_k(results: pd.DataFrame, out) -> list[Path]:
    """kNN test metric against k, a line per method and vote, error bars = std over replicates.

    One figure per dataset; panels = backbone (rows) x metric (columns). Only layer "last" and the full train
    split are drawn; replicates are (fold, tune_seed) with probe seeds averaged.

    Args:
        results: tidy rows (acft.results columns).
        out: a ``.png`` path (``results`` must then hold one dataset) or a directory that receives
            ``{dataset}_metric_vs_k.png`` per dataset.

    Returns:
        the written PNG paths.
    """
    knn = results[
        results["probe"].isin(list(VOTE_STYLES)) & (results["layer"] == "last") & (results["shots"] == "all")
    ]
    knn = knn[knn["metric"].isin(list(METRIC_LABELS))]
    datasets = sorted(results["dataset"].unique())
    out = Path(out)
    if out.suffix == ".png" and len(datasets) != 1:
        raise ValueError(f"{out} is one figure, but the results hold datasets {datasets}; pass a directory")
    if not datasets:
        raise ValueError("no result rows to plot")
    written = []
    for dataset in datasets:
        path = out if out.suffix == ".png" else out / f"{dataset}_metric_vs_k.png"
        rows = knn[knn["dataset"] == dataset]
        if rows.empty:
            raise ValueError(f"dataset {dataset} has no kNN rows (probe knn_majority / knn_weighted) to plot")
        _save(_metric_vs_k_figure(dataset, rows), path)
        written.append(path)
    return written


def _metric_vs_k_figure(dataset: str, rows: pd.DataFrame) -> Figure:
    replicates = (
        rows.groupby(["backbone", "metric", "method", "probe", "k", "fold", "tune_seed"])["value"]
        .mean()
        .reset_index()
    )
    backbones = sorted(replicates["backbone"].unique())
    metrics = [m for m in METRIC_LABELS if m in set(replicates["metric"])]
    colours = {method: f"C{i % 10}" for i, method in enumerate(sorted(replicates["method"].unique()))}
    figure = Figure(figsize=(4.5 * len(metrics), 3.6 * len(backbones)), layout="constrained")
    axes = figure.subplots(len(backbones), len(metrics), squeeze=False)
    panels = [(row, column, b, m) for row, b in enumerate(backbones) for column, m in enumerate(metrics)]
    for row, column, backbone, metric in panels:
        ax = axes[row, column]
        panel = replicates[(replicates["backbone"] == backbone) & (replicates["metric"] == metric)]
        for (method, probe), lines in panel.groupby(["method", "probe"], sort=True):
            stats = [(k, summarize(group["value"].to_numpy())) for k, group in lines.groupby("k", sort=True)]
            ks = [k for k, _ in stats]
            means = [s["mean"] for _, s in stats]
            errors = [0.0 if math.isnan(s["std"]) else s["std"] for _, s in stats]
            style, vote = VOTE_STYLES[probe]
            ax.errorbar(
                ks,
                means,
                yerr=errors,
                ls=style,
                marker="o",
                ms=3,
                capsize=2,
                color=colours[method],
                label=f"{method} ({vote})",
            )
        ax.set_xscale("log")
        ax.set_xticks(sorted(panel["k"].unique()), labels=[str(k) for k in sorted(panel["k"].unique())])
        ax.set(
            xlabel="k (neighbours)",
            ylabel=f"test {METRIC_LABELS[metric]}",
            title=f"{backbone}: kNN {METRIC_LABELS[metric]}",
        )
        ax.grid(alpha=0.3)
    # one legend for all panels, outside them, so no line is hidden behind it
    handles = {}
    for ax in axes.ravel():
        handles.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    figure.legend(handles.values(), handles.keys(), loc="outside right center", fontsize="small")
    figure.suptitle(f"{dataset}: kNN probe against k (mean ± std over replicates)")
    return figure


def plot_embedding_projection(embedding_files: dict[str, str], vocab_path, out_path, **options) -> Path:
    """Write :func:`embedding_projection_figure` (``options``: its keyword arguments) to ``out_path`` (PNG,
    atomically) and return the path."""
    return _save(embedding_projection_figure(embedding_files, vocab_path, **options), Path(out_path))


def embedding_projection_figure(
    embedding_files: dict[str, str],
    vocab_path,
    *,
    method_order: Sequence[str] | None = None,
    frozen: Sequence[str] = ("frozen",),
    fold: int = 0,
    seed: int = 0,
    max_points: int = 2000,
    max_tsne_points: int = 1500,
) -> Figure:
    """2-D maps of the test-role clips of each embedding file: a column per backbone/method, PCA in the top row
    and t-SNE below, each point a clip coloured by its label.

    PCA is linear and shows the global spread (its axes give the explained variance); t-SNE keeps local
    neighbourhoods, which is what the kNN probe scores, so separated colour groups there mean a good kNN space.

    Args:
        embedding_files: {"backbone/method" (or any name; the part after the last "/" is the method):
            Parquet of clip_id, split, fold, labels, embedding [D]}.
        vocab_path: labels.txt of the dataset (colour = class index; multi-label clips use their first label).
        method_order: the methods in config order; columns follow it (see :func:`order_panels`).
        frozen: the frozen (pretrained, untuned) methods, drawn first as the reference.
        fold: evaluation round whose test role is drawn (acft.data.splits.roles_for_fold).
        seed: seed of the subsamples and of t-SNE.
        max_points: clips drawn per method in the PCA row.
        max_tsne_points: clips drawn per method in the t-SNE row (a seeded subsample of the PCA clips), to
            bound its cost.
    """
    if not embedding_files:
        raise ValueError("no embedding files to project")
    vocab = read_vocab(vocab_path)
    index = {label: i for i, label in enumerate(vocab)}
    names = order_panels(list(embedding_files), method_order, frozen)
    n_columns = len(names)
    figure = Figure(figsize=(3.8 * n_columns + 2.0, 7.6), layout="constrained")
    axes = figure.subplots(2, n_columns, squeeze=False)
    colour_map = _label_colours(len(vocab))
    multilabel = unlabelled = False
    for column, name in enumerate(names):
        rng = np.random.default_rng(seed)
        rows, embedding, layer_column = read_embedding_file(embedding_files[name])
        test, classes = _test_clips(rows, embedding_files[name], fold, max_points, rng, index, vocab_path)
        multilabel |= any(len(labels) > 1 for labels in rows["labels"])
        unlabelled |= bool((classes < 0).any())
        layer = "" if layer_column == "embedding" else f", {layer_column}"

        points, explained = pca_2d(embedding[test])
        ax = axes[0, column]
        _scatter(ax, points, colour_map[classes])
        ax.set(
            title=f"{name}{layer}\nPCA (n={len(test)})",
            xlabel=f"PC1 ({100 * explained[0]:.1f} %)",
            ylabel=f"PC2 ({100 * explained[1]:.1f} %)",
        )

        keep = np.arange(len(test))
        if len(keep) > max_tsne_points:
            keep = np.sort(rng.choice(keep, size=max_tsne_points, replace=False))
        ax = axes[1, column]
        _scatter(ax, tsne_2d(embedding[test[keep]], seed=seed), colour_map[classes[keep]])
        ax.set(title=f"{name}{layer}\nt-SNE (n={len(keep)})", xlabel="t-SNE 1", ylabel="t-SNE 2")
    if len(vocab) <= MAX_LEGEND_CLASSES:
        _class_legend(figure, vocab, colour_map, unlabelled, "first label" if multilabel else "label")
    colour = "first label of each clip; clips have several" if multilabel else "label"
    scale = "" if len(vocab) <= MAX_LEGEND_CLASSES else f", {len(vocab)} classes on a colour scale"
    figure.suptitle(
        f"Test embeddings, fold {fold}: PCA (top) and t-SNE on cosine geometry (bottom)\n"
        f"colour = {colour}{scale}"
    )
    return figure


def _test_clips(rows, path, fold: int, max_points: int, rng, index: dict, vocab_path):
    """Positions of the drawn test-role clips (a seeded subsample of at most ``max_points``) and their first
    labels' class indices (-1 for a clip without labels)."""
    test = np.flatnonzero(roles_for_fold(rows, fold) == "test")
    if len(test) == 0:
        raise ValueError(f"{path} has no test-role clips in fold {fold}")
    if len(test) > max_points:
        test = np.sort(rng.choice(test, size=max_points, replace=False))
    first_labels = [labels[0] if len(labels) else None for labels in rows["labels"].iloc[test]]
    unknown = sorted({label for label in first_labels if label is not None and label not in index})
    if unknown:
        raise ValueError(f"{path}: labels {unknown[:5]} are not in the vocabulary {vocab_path}")
    return test, np.array([-1 if label is None else index[label] for label in first_labels])


def _class_legend(figure: Figure, vocab: list[str], colour_map, unlabelled: bool, title: str) -> None:
    handles = [
        Line2D([], [], ls="", marker="o", color=colour_map[i], label=label) for i, label in enumerate(vocab)
    ]
    if unlabelled:
        handles.append(Line2D([], [], ls="", marker="o", color=colour_map[-1], label="(no label)"))
    figure.legend(handles=handles, loc="outside right center", fontsize="small", title=title)


def order_panels(
    names: Sequence[str], method_order: Sequence[str] | None = None, frozen: Sequence[str] = ("frozen",)
) -> list[str]:
    """Panel order: backbones as they first appear, within a backbone the frozen methods first, then the
    others in ``method_order`` (config order); methods missing from it follow in the given order.

    A name is "backbone/method" (the method is the part after the last "/", the backbone the rest).
    """
    order = list(method_order or [])
    backbones = list(dict.fromkeys(name.rpartition("/")[0] for name in names))

    def key(item: tuple[int, str]) -> tuple:
        position, name = item
        backbone, _, method = name.rpartition("/")
        rank = order.index(method) if method in order else len(order)
        return (backbones.index(backbone), method not in frozen, rank, position)

    return [name for _, name in sorted(enumerate(names), key=key)]


def pca_2d(embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project [N, D] onto its first two principal components.

    Returns:
        points [N, 2] and the explained-variance ratio [2]. Component signs are fixed (largest |loading|
        positive) so the picture does not flip between runs.
    """
    centred = np.asarray(embedding, dtype=np.float64)
    centred = centred - centred.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    components = components[:2]
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    components = components * signs[:, None]
    total = float((singular**2).sum())
    explained = (singular[:2] ** 2) / total if total > 0 else np.zeros(2)
    points = centred @ components.T
    if points.shape[1] < 2:  # one-dimensional embeddings: draw them on a line
        points = np.pad(points, ((0, 0), (0, 2 - points.shape[1])))
        explained = np.pad(explained, (0, 2 - len(explained)))
    return points, explained


def tsne_2d(embedding: np.ndarray, *, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """t-SNE map [N, 2] of [N, D] (scikit-learn, Barnes-Hut), deterministic given ``seed``.

    Rows are L2-normalised first: the kNN probe compares embeddings by cosine, and on unit vectors the
    Euclidean distance t-SNE uses is a monotone function of the cosine (|a - b|^2 = 2 - 2 cos), so the
    neighbours t-SNE keeps are the probe's neighbours; the PCA initialisation then sees the same geometry.
    The perplexity is clamped to (N - 1) / 3 (each point needs about 3 x perplexity neighbours). It runs on
    one thread so the map does not depend on the machine's core count.

    Cost (this 2-core machine, one thread, 256-d, default 1000 iterations): about 0.8 s for 300 clips,
    2.8 s for 1000 and 4.7 s for 1500 (hence ``max_tsne_points``) per panel.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    data = np.asarray(embedding, dtype=np.float64)
    n = len(data)
    if n < 3:  # nothing to embed: a point, or a pair placed on a line
        return np.column_stack([np.arange(n, dtype=np.float64), np.zeros(n)])
    norms = np.linalg.norm(data, axis=1, keepdims=True)
    data = np.divide(data, norms, out=np.zeros_like(data), where=norms > 0)  # all-zero rows stay zero
    tsne = TSNE(
        n_components=2,
        perplexity=min(float(perplexity), (n - 1) / 3),
        init="pca",
        random_state=seed,
    )
    with threadpool_limits(limits=1):
        return tsne.fit_transform(data).astype(np.float64)


def _scatter(ax, points: np.ndarray, colours: np.ndarray) -> None:
    ax.scatter(points[:, 0], points[:, 1], c=colours, s=6, alpha=0.8, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])


def read_embedding_file(path) -> tuple[pd.DataFrame, np.ndarray, str]:
    """Rows (clip_id, split, fold, labels), the [N, D] float32 embedding and its column name.

    The column is "embedding", or for a layer-sweep file the deepest "embedding_L{i}".
    """
    rows, embeddings, _ = read_embeddings(path)
    column = "embedding" if "embedding" in embeddings else list(embeddings)[-1]  # a sweep is in layer order
    return rows, embeddings[column], column


def plot_training_curves(log_csvs: dict[str, str], out_path) -> Path:
    """Loss and val kNN metric per epoch: a column of panels per dataset/method, a line per run.

    Args:
        log_csvs: {run name: tuner log.csv}; run names "backbone/method/fold{f}/seed{s}" (or any
            "group/.../run") are grouped by everything before the last two parts. A log has columns
            lr_candidate, epoch, train_loss, val_loss and val_metric (or val_knn, as the tuner names it).
        out_path: the PNG.
    """
    if not log_csvs:
        raise ValueError("no training logs to plot")
    groups: dict[str, list[tuple[str, pd.DataFrame]]] = {}
    for name, path in log_csvs.items():
        parts = name.split("/")
        group, run = ("/".join(parts[:-2]), "/".join(parts[-2:])) if len(parts) > 2 else (name, name)
        groups.setdefault(group, []).append((run, _read_log(path)))
    figure = Figure(figsize=(4.5 * len(groups), 7.0), layout="constrained")
    axes = figure.subplots(2, len(groups), squeeze=False)
    for column, (group, runs) in enumerate(groups.items()):
        loss_ax, metric_ax = axes[0, column], axes[1, column]
        for i, (run, log) in enumerate(runs):
            candidates = sorted(log["lr_candidate"].unique())
            for lr, rows in log.groupby("lr_candidate", sort=True):
                label = run if len(candidates) == 1 else f"{run}, lr {lr:g}"
                colour = f"C{i % 10}"
                style = ["-", "-.", ":"][candidates.index(lr) % 3]
                loss_ax.plot(
                    rows["epoch"],
                    rows["train_loss"],
                    ls=style,
                    marker="o",
                    ms=3,
                    color=colour,
                    label=f"{label} train",
                )
                loss_ax.plot(
                    rows["epoch"], rows["val_loss"], ls="--", color=colour, alpha=0.7, label=f"{label} val"
                )
                metric_ax.plot(
                    rows["epoch"], rows["val_metric"], ls=style, marker="o", ms=3, color=colour, label=label
                )
        loss_ax.set(title=f"{group}: loss", xlabel="epoch (0 = pretrained)", ylabel="loss")
        metric_ax.set(
            title=f"{group}: validation kNN metric", xlabel="epoch (0 = pretrained)", ylabel="val kNN metric"
        )
        for ax in (loss_ax, metric_ax):
            ax.grid(alpha=0.3)
            ax.legend(fontsize="xx-small")
    figure.suptitle("Training curves (train loss solid, val loss dashed)")
    return _save(figure, Path(out_path))


def plot_tune_curves(summaries: list[dict], path, metric_label: str, chosen: dict) -> Path:
    """One tuning run's curves: loss (train, and val with epoch 0 = the pretrained model) and the val selection
    metric per epoch, a colour per lr candidate, the chosen epoch marked.

    Args:
        summaries: the tuner's candidate summaries ({"lr", "log": epoch rows, "pretrained": val scores}).
        path: the PNG. metric_label: y label of the selection metric.
        chosen: the chosen summary, with ``selected`` (the log column that picked it) and ``best_epoch``.
    """
    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_axes, metric_axes = figure.subplots(1, 2)
    for summary in summaries:
        epochs = [row["epoch"] for row in summary["log"]]
        lr = summary["lr"]
        line = loss_axes.plot(
            epochs, [row["train_loss"] for row in summary["log"]], marker="o", label=f"train, lr {lr:g}"
        )[0]
        # epoch 0 is the pretrained model (no training loss)
        val_losses = [summary["pretrained"]["val_loss"]] + [row["val_loss"] for row in summary["log"]]
        selected = [summary["pretrained"][chosen["selected"]]] + [row["val_metric"] for row in summary["log"]]
        loss_axes.plot([0, *epochs], val_losses, ls="--", color=line.get_color(), label=f"val, lr {lr:g}")
        metric_axes.plot([0, *epochs], selected, marker="o", color=line.get_color(), label=f"lr {lr:g}")
    metric_axes.axvline(chosen["best_epoch"], color="grey", ls=":", label=f"chosen: lr {chosen['lr']:g}")
    loss_axes.set(xlabel="epoch", ylabel="loss", title="loss (val at epoch 0 = pretrained model)")
    metric_axes.set(xlabel="epoch", ylabel=metric_label, title="val selection metric")
    loss_axes.legend(fontsize="small")
    metric_axes.legend(fontsize="small")
    return _save(figure, Path(path))


def _read_log(path) -> pd.DataFrame:
    log = pd.read_csv(path)
    metric = next((c for c in VAL_METRIC_COLUMNS if c in log.columns), None)
    missing = [c for c in ("lr_candidate", "epoch", "train_loss", "val_loss") if c not in log.columns]
    if missing or metric is None:
        need = missing + ([] if metric else [" or ".join(VAL_METRIC_COLUMNS)])
        raise ValueError(f"training log {path} lacks columns {need}")
    return log.rename(columns={metric: "val_metric"}).sort_values(["lr_candidate", "epoch"], kind="mergesort")


def _label_colours(n_classes: int) -> np.ndarray:
    """[n_classes + 1, 4] RGBA: a colour per class, grey last for clips without a label (index -1).

    Up to ``MAX_LEGEND_CLASSES`` classes get discrete colours (tab10, or tab20 reordered so the first ten
    classes get its ten distinct dark hues and classes 11-20 their light pairs); more classes are spread over
    a continuous map (the figure then has no legend).
    """
    from matplotlib import colormaps

    if n_classes <= 10:
        colours = colormaps["tab10"](np.arange(n_classes))
    elif n_classes <= MAX_LEGEND_CLASSES:
        colours = colormaps["tab20"](np.r_[0:20:2, 1:20:2][:n_classes])
    else:
        colours = colormaps["turbo"](np.linspace(0, 1, n_classes))
    return np.vstack([colours.reshape(-1, 4), [0.6, 0.6, 0.6, 1.0]])


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    with atomic_path(path, suffix=".png.tmp") as tmp:
        # No Software/date metadata: identical inputs give identical bytes.
        figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    return path
