"""Report figures: valid, non-empty, deterministic PNGs drawn from the right data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from matplotlib.image import imread
from sklearn.decomposition import PCA

from acft.report import plots
from acft.results import make_rows

torch.set_num_threads(1)

VOCAB = ["cat", "dog", "owl"]


def assert_png(path):
    image = imread(path)
    assert path.stat().st_size > 5_000
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert image[..., :3].std() > 0.01  # something was drawn, not a blank canvas


def knn_results(datasets=("toy",)):
    frames = []
    for dataset in datasets:
        for method, base in [("frozen", 0.5), ("supcon", 0.7)]:
            for seed in [0] if method == "frozen" else [0, 1]:
                records = [
                    {"probe": probe, "k": k, "metric": metric, "value": base + 0.01 * seed - 0.002 * k}
                    for probe in ("knn_majority", "knn_weighted")
                    for k in (1, 5, 10, 20)
                    for metric in ("accuracy", "macro_f1")
                ]
                records.append({"probe": "linear", "metric": "accuracy", "value": base})
                frames.append(
                    make_rows(
                        records,
                        dataset=dataset,
                        backbone="bb",
                        method=method,
                        fold=0,
                        tune_seed=seed,
                        config_hash="h",
                    )
                )
    return pd.concat(frames, ignore_index=True)


def test_metric_vs_k_file_and_directory_modes(tmp_path):
    one = plots.plot_metric_vs_k(knn_results(), tmp_path / "toy_metric_vs_k.png")
    assert one == [tmp_path / "toy_metric_vs_k.png"]
    assert_png(one[0])
    many = plots.plot_metric_vs_k(knn_results(("a", "b")), tmp_path / "dir")
    assert many == [tmp_path / "dir/a_metric_vs_k.png", tmp_path / "dir/b_metric_vs_k.png"]
    for path in many:
        assert_png(path)
    with pytest.raises(ValueError, match="pass a directory"):
        plots.plot_metric_vs_k(knn_results(("a", "b")), tmp_path / "one.png")
    no_knn = knn_results()
    with pytest.raises(ValueError, match="no kNN rows"):
        plots.plot_metric_vs_k(no_knn[no_knn["probe"] == "linear"], tmp_path / "x.png")


def test_metric_vs_k_is_deterministic(tmp_path):
    plots.plot_metric_vs_k(knn_results(), tmp_path / "a.png")
    plots.plot_metric_vs_k(knn_results(), tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def write_embeddings(path, n=60, dim=8, seed=0, multilabel=False, layers=None):
    """The embedding Parquet schema: clip_id, split, fold (null: fixed split), labels, embedding [D]."""
    rng = np.random.default_rng(seed)
    classes = (np.arange(n) // 3) % len(VOCAB)  # every split holds every class
    embedding = (rng.normal(size=(n, dim)) + 3 * np.eye(dim)[classes]).astype(np.float32)
    labels = [
        [VOCAB[c], VOCAB[(c + 1) % 3]] if multilabel and i % 2 else [VOCAB[c]] for i, c in enumerate(classes)
    ]
    columns = {
        "clip_id": pa.array([f"clip{i}" for i in range(n)]),
        "split": pa.array(["train", "val", "test"] * (n // 3)),
        "fold": pa.array([None] * n, type=pa.int32()),
        "labels": pa.array(labels, type=pa.list_(pa.string())),
    }
    for name in layers or ["embedding"]:
        columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(embedding.ravel()), dim)
    pq.write_table(pa.table(columns), path)
    return embedding


def test_projection_draws_only_test_clips(tmp_path, monkeypatch):
    (tmp_path / "labels.txt").write_text("\n".join(VOCAB) + "\n")
    write_embeddings(tmp_path / "frozen.parquet", seed=0)
    write_embeddings(tmp_path / "supcon.parquet", seed=1, multilabel=True)
    projected, mapped = [], []
    real_pca, real_tsne = plots.pca_2d, plots.tsne_2d
    monkeypatch.setattr(plots, "pca_2d", lambda x: projected.append(x.copy()) or real_pca(x))
    monkeypatch.setattr(plots, "tsne_2d", lambda x, **kw: mapped.append(x.copy()) or real_tsne(x, **kw))
    files = {"bb/frozen": str(tmp_path / "frozen.parquet"), "bb/supcon": str(tmp_path / "supcon.parquet")}
    kwargs = {"max_points": 15, "max_tsne_points": 10}
    out = plots.plot_embedding_projection(files, tmp_path / "labels.txt", tmp_path / "proj.png", **kwargs)
    assert_png(out)
    # 20 of the 60 clips are in the test role; max_points subsamples them to 15, t-SNE draws 10 of those
    assert [x.shape for x in projected] == [(15, 8), (15, 8)]
    assert [x.shape for x in mapped] == [(10, 8), (10, 8)]
    test_rows = write_embeddings(tmp_path / "again.parquet", seed=0)[2::3]
    assert all(any(np.array_equal(row, t) for t in test_rows) for row in projected[0])
    assert all(any(np.array_equal(row, t) for t in projected[0]) for row in mapped[0])
    plots.plot_embedding_projection(files, tmp_path / "labels.txt", tmp_path / "again.png", **kwargs)
    assert (tmp_path / "proj.png").read_bytes() == (tmp_path / "again.png").read_bytes()


def projection_files(tmp_path, names, multilabel=False):
    (tmp_path / "labels.txt").write_text("\n".join(VOCAB) + "\n")
    files = {}
    for i, name in enumerate(names):
        path = tmp_path / f"{name.replace('/', '_')}.parquet"
        write_embeddings(path, seed=i, multilabel=multilabel)
        files[name] = str(path)
    return files


def test_projection_panels_put_frozen_first_then_config_order(tmp_path):
    # the rule hands the files over sorted by name; the config lists supcon before ce
    files = projection_files(tmp_path, ["bb/ce", "bb/frozen", "bb/supcon"])
    figure = plots.embedding_projection_figure(
        files, tmp_path / "labels.txt", method_order=["supcon", "frozen", "ce"], frozen=["frozen"]
    )
    titles = [ax.get_title().split("\n") for ax in figure.axes]
    assert [t[0] for t in titles] == ["bb/frozen", "bb/supcon", "bb/ce"] * 2
    assert [t[1] for t in titles] == ["PCA (n=20)"] * 3 + ["t-SNE (n=20)"] * 3


def test_panel_order_per_backbone():
    names = ["b2/ce", "b1/supcon", "b1/linear_frozen", "b1/new", "b1/ce", "b2/linear_frozen"]
    order = plots.order_panels(names, ["linear_frozen", "ce", "supcon"], frozen=["linear_frozen"])
    assert order == ["b2/linear_frozen", "b2/ce", "b1/linear_frozen", "b1/ce", "b1/supcon", "b1/new"]
    assert plots.order_panels(["x/supcon", "x/frozen", "x/ce"]) == ["x/frozen", "x/supcon", "x/ce"]


def test_projection_legend_names_the_classes_in_their_colours(tmp_path):
    files = projection_files(tmp_path, ["bb/frozen"])
    figure = plots.embedding_projection_figure(files, tmp_path / "labels.txt")
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == VOCAB
    assert legend.get_title().get_text() == "label"
    legend_rgb = {
        t.get_text(): h.get_color()[:3]
        for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)
    }
    # each test clip (every third row from the third) is drawn in its class's legend colour
    classes = [VOCAB[c] for c in ((np.arange(60) // 3) % 3)[2::3]]
    for ax in figure.axes:
        (points,) = ax.collections
        drawn = points.get_facecolors()[:, :3]
        assert len(drawn) == len(classes)
        for rgb, label in zip(drawn, classes, strict=True):
            np.testing.assert_allclose(rgb, legend_rgb[label])
    assert len({tuple(rgb) for rgb in legend_rgb.values()}) == len(VOCAB)


def test_projection_multilabel_and_many_classes(tmp_path):
    files = projection_files(tmp_path, ["bb/frozen"], multilabel=True)
    figure = plots.embedding_projection_figure(files, tmp_path / "labels.txt")
    assert figure.legends[0].get_title().get_text() == "first label"
    assert "first label" in figure.get_suptitle()
    many = VOCAB + [f"extra{i}" for i in range(22)]  # 25 classes: a colour scale, no legend
    (tmp_path / "many.txt").write_text("\n".join(many) + "\n")
    figure = plots.embedding_projection_figure(files, tmp_path / "many.txt")
    assert figure.legends == [] and "25 classes on a colour scale" in figure.get_suptitle()


def test_label_colours_are_distinct():
    for n in (3, 10, 12, 20, 25):
        colours = plots._label_colours(n)
        assert colours.shape == (n + 1, 4)
        assert len({tuple(c) for c in colours}) == n + 1  # the last (grey, no label) differs too
    # with tab20 the first ten classes get ten distinct hues, not light/dark pairs of five
    np.testing.assert_allclose(plots._label_colours(12)[:10], plots._label_colours(10)[:10], atol=0.02)


def clusters_by_direction(n_per=40, n_classes=5, dim=64, seed=0):
    """Clusters that differ in direction only, at norms spread over 50x: cosine separates them, L2 would not."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), n_per)
    points = centres[labels] + 0.3 * rng.normal(size=(len(labels), dim))
    points *= rng.uniform(0.1, 5.0, size=(len(labels), 1))
    return points.astype(np.float32), labels


def test_tsne_keeps_cosine_neighbourhoods():
    points, labels = clusters_by_direction()
    mapped = plots.tsne_2d(points, seed=0)
    assert mapped.shape == (len(points), 2) and np.isfinite(mapped).all()
    # leave-one-out 5-NN vote in the 2-D map agrees with the cluster labels
    distances = np.linalg.norm(mapped[:, None] - mapped[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    neighbours = labels[np.argsort(distances, axis=1)[:, :5]]
    votes = np.array([np.bincount(row, minlength=5).argmax() for row in neighbours])
    assert (votes == labels).mean() >= 0.95


def test_tsne_is_deterministic_and_handles_few_points():
    points, _ = clusters_by_direction(n_per=10)
    np.testing.assert_array_equal(plots.tsne_2d(points, seed=3), plots.tsne_2d(points, seed=3))
    # cosine geometry: scaling rows (by powers of two, exact in floating point) leaves the map unchanged
    scales = 2.0 ** np.random.default_rng(1).integers(-4, 5, size=(len(points), 1))
    np.testing.assert_array_equal(plots.tsne_2d(points * scales, seed=3), plots.tsne_2d(points, seed=3))
    for n in (1, 2, 5):  # the perplexity is clamped below the number of points
        mapped = plots.tsne_2d(points[:n], seed=0)
        assert mapped.shape == (n, 2) and np.isfinite(mapped).all()


def test_projection_rejects_unknown_labels(tmp_path):
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    write_embeddings(tmp_path / "e.parquet")
    with pytest.raises(ValueError, match="owl"):
        plots.plot_embedding_projection(
            {"m": str(tmp_path / "e.parquet")}, tmp_path / "labels.txt", tmp_path / "p.png"
        )


def test_reader_picks_the_deepest_layer_of_a_sweep(tmp_path):
    write_embeddings(tmp_path / "sweep.parquet", layers=["embedding_L2", "embedding_L10", "embedding_L4"])
    rows, embedding, column = plots.read_embedding_file(tmp_path / "sweep.parquet")
    assert column == "embedding_L10" and embedding.shape == (60, 8) and embedding.dtype == np.float32
    assert rows["fold"].isna().all() and rows["labels"].iloc[0] == ["cat"]


def test_pca_matches_scikit_learn():
    data = np.random.default_rng(3).normal(size=(50, 6)) * np.array([5, 3, 1, 1, 0.5, 0.1])
    points, explained = plots.pca_2d(data)
    reference = PCA(n_components=2).fit(data)
    expected = reference.transform(data)
    signs = np.sign((points * expected).sum(axis=0))  # PCA signs are arbitrary
    np.testing.assert_allclose(points, expected * signs, atol=1e-9)
    np.testing.assert_allclose(explained, reference.explained_variance_ratio_, rtol=1e-9)


def write_log(path, seed, n_epochs=4, val_column="val_knn"):
    epochs = np.arange(n_epochs + 1)
    pd.DataFrame(
        {
            "lr_candidate": 3e-4,
            "epoch": epochs,
            "train_loss": np.r_[np.nan, 2.0 / epochs[1:]] + 0.1 * seed,
            "val_loss": 2.5 - 0.2 * epochs,
            val_column: 0.5 + 0.05 * epochs,
            "lr": 3e-4,
        }
    ).to_csv(path, index=False)
    return str(path)


def test_training_curves(tmp_path):
    logs = {
        "bb/ce/fold0/seed0": write_log(tmp_path / "a.csv", 0),
        "bb/ce/fold0/seed1": write_log(tmp_path / "b.csv", 1),
        "bb/supcon/fold0/seed0": write_log(tmp_path / "c.csv", 0, val_column="val_metric"),
    }
    assert_png(plots.plot_training_curves(logs, tmp_path / "curves.png"))
    pd.read_csv(logs["bb/ce/fold0/seed0"]).drop(columns="val_knn").to_csv(
        tmp_path / "broken.csv", index=False
    )
    with pytest.raises(ValueError, match="broken.csv.*val_metric or val_knn"):
        plots.plot_training_curves({"bb/ce/fold0/seed0": str(tmp_path / "broken.csv")}, tmp_path / "x.png")
