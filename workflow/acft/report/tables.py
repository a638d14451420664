"""Paper tables from the tidy results: Markdown, LaTeX (booktabs) and CSV per dataset.

Per dataset, in ``out_dir``:

- ``{dataset}.md/.tex/.csv``: headline metrics, rows = backbone x method (frozen, then the CE/BCE baselines,
  then the rest in config order), cells "mean ± std" over the units of inference (k-fold data: folds, each the
  mean over its tuning seeds; a fixed split: tuning seeds; see ``acft.report.stats``), best per column and
  backbone in bold; the CSV holds one row per cell with mean, std, 95 % t-interval and n (units).
- ``{dataset}_long.csv``: every probe, k, layer, shots and metric summarised the same way (the full k sweep,
  and the tuning choices: probe "tune", metrics chosen_lr and chosen_epoch).
- ``{dataset}_deltas.*``: every method minus every method before it in table order (so each tuned method
  against the frozen backbone and the CE/BCE baselines, and the contrastive variants against each other),
  paired by unit: mean delta, 95 % Student-t interval, paired sign-flip p-value, n.
- ``{dataset}_geometry.*``: the embedding-geometry diagnostics, mean ± std.
- ``{dataset}_fewshot.*``: headline metrics against train clips per class (rows with shots != "all").

Every file is written even when it has no rows (a one-line "no rows" note), so a workflow can declare it.
Headline tables use layer "last" and the full train split; other layers live in the long CSV.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..io import write_csv, write_text
from ..methods import describe_training, training_settings
from .stats import REPLICATE, SEED, inference_units, paired_test, paired_unit_deltas, summarize, unit_of

DEFAULT_BASELINES = {"frozen": ["frozen"], "supervised": ["ce", "bce"]}
DECIMALS = 3
SUMMARY_COLUMNS = ["mean", "std", "ci_low", "ci_high", "n"]

# Geometry diagnostics in print order with their column labels; other geometry metrics follow by name.
GEOMETRY_LABELS = {
    "alignment": "Alignment",
    "uniformity": "Uniformity",
    "intra_class_cosine": "Intra-class cos",
    "inter_class_cosine": "Inter-class cos",
    "silhouette": "Silhouette",
    "effective_rank": "Effective rank",
    "anisotropy": "Anisotropy",
}

LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "×": r"$\times$",
    "−": r"$-$",
    "Δ": r"$\Delta$",
    "τ": r"$\tau$",
}


@dataclass(frozen=True)
class Column:
    """One table column: the rows (probe, metric, k) its cells summarise."""

    label: str
    probe: str
    metric: str
    k: int = 0


@dataclass
class Table:
    """A rendered table: label columns on the left, numeric (right-aligned) cells after them."""

    title: str
    header: list[str]
    rows: list[list[str]]
    n_label_columns: int
    notes: list[str]
    empty_message: str
    bold: set[tuple[int, int]] = field(default_factory=set)


def headline_columns(multilabel: bool, k: int) -> list[Column]:
    """The main-table columns: accuracy-type score and macro-F1 per probe (mAP for multi-label)."""
    score, short = ("map", "mAP") if multilabel else ("accuracy", "acc")
    return [
        Column(f"Linear {short}", "linear", score),
        Column("Linear macro-F1", "linear", "macro_f1"),
        Column(f"kNN@{k} {short} (maj.)", "knn_majority", score, k),
        Column(f"kNN@{k} {short} (w.)", "knn_weighted", score, k),
        Column(f"kNN@{k} macro-F1 (w.)", "knn_weighted", "macro_f1", k),
        Column(f"Head {short}", "head", score),
    ]


def render_tables(
    results: pd.DataFrame,
    out_dir,
    *,
    settings: dict,
    headline_k: int = 5,
    method_order: list[str] | None = None,
    baselines: dict | None = None,
    seed: int = 0,
    sign_flips: int = 10_000,
) -> list[Path]:
    """Write every table of every dataset in ``results``; return the written paths in a stable order.

    Args:
        results: tidy rows (acft.results columns) of one or several datasets.
        out_dir: directory of the tables.
        settings: the probe settings quoted in the footnotes (config ``probes``: knn, linear, geometry).
        headline_k: k of the kNN columns of the main table.
        method_order: methods in config order (methods not listed follow alphabetically).
        baselines: {"frozen": name(s), "supervised": name(s)} of the reference methods.
        seed: base seed of the Monte Carlo sign flips (used only beyond 16 units).
        sign_flips: random sign patterns of a paired test with more than 16 units.
    """
    if results.empty:
        raise ValueError("no result rows to tabulate")
    unknown = sorted(set(baselines or {}) - set(DEFAULT_BASELINES))
    if unknown:
        raise ValueError(f"baselines has unknown roles {unknown}; expected {sorted(DEFAULT_BASELINES)}")
    references = {role: _as_list(names) for role, names in {**DEFAULT_BASELINES, **(baselines or {})}.items()}
    out_dir = Path(out_dir)
    written = []
    for dataset in sorted(results["dataset"].unique()):
        context = DatasetResults(
            results[results["dataset"] == dataset], settings, headline_k, method_order or [], references
        )
        tables = {
            "": main_table(context),
            "_deltas": delta_table(context, seed=seed, flips=sign_flips),
            "_geometry": geometry_table(context),
            "_fewshot": fewshot_table(context),
        }
        for suffix, (table, frame) in tables.items():
            paths = [out_dir / f"{dataset}{suffix}.{ext}" for ext in ("md", "tex", "csv")]
            write_text(paths[0], to_markdown(table))
            write_text(paths[1], to_latex(table))
            write_csv(frame, paths[2])
            written += paths
        long_path = out_dir / f"{dataset}_long.csv"
        write_csv(context.long_frame(), long_path)
        written.append(long_path)
    return written


class DatasetResults:
    """One dataset's rows reduced to replicate values, with the ordering and settings every table shares.

    ``cells`` keeps the (fold, tuning seed) replicates; every summary and test reduces them to units of
    inference first (``acft.report.stats.inference_units``).
    """

    CELL_KEYS = ["backbone", "method", "probe", "layer", "shots", "k", "metric"]

    def __init__(self, rows: pd.DataFrame, settings: dict, headline_k: int, method_order: list, references):
        self.dataset = str(rows["dataset"].iloc[0])
        self.rows = rows
        self.settings = settings
        self.k = headline_k
        self.frozen = references["frozen"]
        self.supervised = references["supervised"]
        self.multilabel = bool((rows["metric"] == "map").any())
        self.columns = headline_columns(self.multilabel, headline_k)
        self.backbones = sorted(rows["backbone"].unique())
        self.methods = _method_order(set(rows["method"]), method_order, self.frozen, self.supervised)
        # Probe seeds are averaged within a replicate: they measure probe noise, not tuning noise.
        per_replicate = rows.groupby([*self.CELL_KEYS, *REPLICATE], sort=True)["value"].mean().reset_index()
        self.cells = {
            key: group.set_index(REPLICATE)["value"]
            for key, group in per_replicate.groupby(self.CELL_KEYS, sort=True)
        }

    def values(self, backbone: str, method: str, column: Column, shots: str = "all") -> pd.Series:
        """Replicate values, indexed by (fold, tune_seed), of one cell (layer "last"); empty if it has none."""
        key = (backbone, method, column.probe, "last", shots, column.k, column.metric)
        empty = pd.Series(dtype=float, index=pd.MultiIndex.from_arrays([[], []], names=REPLICATE))
        return self.cells.get(key, empty)

    def summary(self, backbone: str, method: str, column: Column, shots: str = "all") -> dict:
        """mean, std, t-interval and n over the cell's units of inference."""
        return summarize(inference_units(self.values(backbone, method, column, shots)).to_numpy())

    def methods_of(self, backbone: str) -> list[str]:
        present = set(self.rows.loc[self.rows["backbone"] == backbone, "method"])
        return [m for m in self.methods if m in present]

    def comparisons(self, backbone: str) -> list[tuple[str, str]]:
        """(method, reference) for every method and every method before it in table order: each tuned method
        against the frozen backbone and the CE/BCE baselines, and the contrastive variants against each other
        (e.g. jaccard_supcon - supcon). Two frozen methods (e.g. external embeddings) are compared too."""
        present = self.methods_of(backbone)
        return [(method, reference) for i, method in enumerate(present) for reference in present[:i]]

    def shots(self) -> list[str]:
        """Few-shot settings present (not "all"), in numeric order."""
        return sorted({s for s in self.rows["shots"] if s != "all"}, key=_natural)

    def unit(self) -> str:
        """The unit of inference of this dataset: "fold" (k-fold) or "tuning seed" (fixed split)."""
        index = pd.MultiIndex.from_frame(self.rows[REPLICATE])
        return unit_of(pd.Series(0.0, index=index))

    def replicate_note(self) -> str:
        folds = sorted(self.rows["fold"].unique())
        seeds = sorted(self.rows.loc[~self.rows["method"].isin(self.frozen), "tune_seed"].unique())
        seed_text = f"tuning seeds {_join(seeds)}" if seeds else "no tuned method"
        if self.unit() == SEED:
            note = (
                f"Cells: mean ± sample std over the tuning seeds, the unit of inference on this fixed split "
                f"(fold 0; {seed_text}; n = {len(seeds)}); the frozen backbone has a single run"
            )
        else:
            note = (
                f"Cells: mean ± sample std over the folds, the unit of inference (folds {_join(folds)}; "
                f"n = {len(folds)}): each fold's value is the mean over its {seed_text}, which share the "
                "fold's test clips; the frozen backbone has one run per fold"
            )
        probe_seeds = self.settings.get("linear", {}).get("probe_seeds", [])
        if len(probe_seeds) > 1:
            note += f"; the {len(probe_seeds)} linear-probe seeds are averaged within a run"
        return note + ". A cell without ± has a single unit. n/a: no result."

    def probe_notes(self) -> list[str]:
        notes = []
        linear = self.settings.get("linear")
        if linear:
            notes.append(
                "Linear probe: fitted by L-BFGS on the train split (train-standardised features); weight decay "
                f"from {_grid(linear.get('weight_decay_grid'))} chosen on val; max_iter "
                f"{linear.get('max_iter', 'n/a')}."
            )
        knn = self.settings.get("knn")
        if knn:
            notes.append(
                f"kNN probe: cosine similarity to the train split; k = {self.k} shown (swept: "
                f"{_join(knn.get('k', []))}); maj. = majority vote, w. = similarity-weighted vote exp(s/τ), "
                f"τ = {_number(knn.get('temperature'))}."
            )
        rows = self.rows
        clamped = rows[(rows["metric"] == "effective_k") & (rows["value"] < rows["k"])]
        if not clamped.empty:
            used = clamped.groupby("k")["value"].agg(["min", "max"])
            text = "; ".join(
                f"k = {k} used {lo:g}" + (f"–{hi:g}" if hi != lo else "") for k, (lo, hi) in used.iterrows()
            )
            notes.append(
                f"kNN: a k above the train clips of a run is clamped to them (every train clip votes): {text}."
            )
        unseen = rows[rows["metric"] == "test_classes_without_train"]
        if not unseen.empty:
            runs = unseen.drop_duplicates(["backbone", "method", *REPLICATE])
            notes.append(
                f"{len(runs)} run(s) have test classes without a train clip (at most {unseen['value'].max():g}), "
                "which no probe can predict; the probe logs name them."
            )
        if self.multilabel:
            notes.append("mAP: macro average precision over the classes with a test positive.")
        return notes

    def tuning_notes(self) -> list[str]:
        """The shared budget and lr candidates, and each tuned method's sampler and selection metric."""
        tune, methods = self.settings.get("tune"), self.settings.get("methods", {})
        tuned = [m for m in self.methods if m in methods and methods[m].get("loss") != "none"]
        if not tune or not tuned:
            return []
        batch = f"{tune.get('classes_per_batch', 'P')}×{tune.get('clips_per_class', 'm')}"
        notes = [
            f"Tuning budget, equal for every method: {tune.get('epochs', 'n/a')} epochs of ceil(N_train / B) "
            f"batches of B = {batch} clips (P capped at the number of labels), i.e. one pass of train clips "
            f"per epoch, {tune.get('grad_accum', 1)} batch(es) per optimiser step; lr candidates "
            f"{_grid(tune.get('lr_candidates'))}; chosen lr and epoch per run: probe 'tune' rows of "
            f"{self.dataset}_long.csv and results.csv."
        ]
        knn_k = tune.get("val_knn_k", 5)
        described = {
            m: describe_training(training_settings(methods[m]), multilabel=self.multilabel, knn_k=knn_k)
            for m in tuned
        }
        notes.append("Training: " + "; ".join(f"{m}: {text}" for m, text in described.items()) + ".")
        return notes

    def long_frame(self) -> pd.DataFrame:
        """Every (backbone, method, probe, layer, shots, k, metric), e.g. the full k sweep, over replicates."""
        rank = {method: i for i, method in enumerate(self.methods)}

        def order(key):
            backbone, method, probe, layer, shots, k, metric = key
            return backbone, rank[method], probe, _natural(layer), _natural(shots), k, metric

        records = [
            {
                "dataset": self.dataset,
                **dict(zip(self.CELL_KEYS, key, strict=True)),
                **summarize(inference_units(values).to_numpy()),
            }
            for key, values in sorted(self.cells.items(), key=lambda item: order(item[0]))
        ]
        return pd.DataFrame(records, columns=["dataset", *self.CELL_KEYS, *SUMMARY_COLUMNS])


def main_table(results: DatasetResults) -> tuple[Table, pd.DataFrame]:
    """Headline metrics: rows = backbone x method, bold = best mean per column within a backbone."""
    rows, bold, records = [], set(), []
    for backbone in results.backbones:
        first_row = len(rows)
        block = []
        for method in results.methods_of(backbone):
            summaries = [results.summary(backbone, method, column) for column in results.columns]
            block.append(summaries)
            rows.append([backbone, method, *map(format_cell, summaries)])
            records += [
                {"dataset": results.dataset, "backbone": backbone, "method": method, "column": column.label}
                | {"probe": column.probe, "k": column.k, "metric": column.metric}
                | summary
                | {"cell": format_cell(summary)}
                for column, summary in zip(results.columns, block[-1], strict=True)
            ]
        bold |= {(first_row + row, 2 + column) for row, column in _best_cells(block)}
    table = Table(
        title=f"{results.dataset}: test metrics",
        header=["Backbone", "Method", *[column.label for column in results.columns]],
        rows=rows,
        n_label_columns=2,
        bold=bold,
        notes=[
            results.replicate_note(),
            "Bold: the best mean per column within a backbone (every tie at the printed precision; only "
            "where at least two methods have a value).",
            f"95 % Student-t intervals and n (units) per cell: {results.dataset}.csv; every probe, k, layer and "
            f"metric: {results.dataset}_long.csv.",
            *results.probe_notes(),
            *results.tuning_notes(),
            "Head: the fine-tuned model's own classifier (methods trained with one), scored like the probes.",
        ],
        empty_message="No result rows.",
    )
    columns = ["dataset", "backbone", "method", "column", "probe", "k", "metric", *SUMMARY_COLUMNS, "cell"]
    return table, pd.DataFrame(records, columns=columns)


def delta_table(results: DatasetResults, *, seed: int, flips: int) -> tuple[Table, pd.DataFrame]:
    """Every method minus every earlier method per headline column, paired by unit: t-interval, sign-flip p."""
    rows, records = [], []
    for backbone in results.backbones:
        for method, reference in results.comparisons(backbone):
            for column in results.columns:
                theirs = results.values(backbone, reference, column).dropna()
                if theirs.empty:  # not applicable (e.g. the frozen backbone has no head), not missing
                    continue
                mine = results.values(backbone, method, column).dropna()
                deltas = paired_unit_deltas(mine, theirs, shared_reference=reference in results.frozen)
                key = f"{seed}|{results.dataset}|{backbone}|{method}|{reference}|{column.label}"
                test = paired_test(deltas, flips=flips, seed=zlib.crc32(key.encode()))
                rows.append([backbone, method, reference, column.label, *_format_test(test)])
                records.append(
                    {"dataset": results.dataset, "backbone": backbone, "method": method}
                    | {"reference": reference, "column": column.label, "probe": column.probe}
                    | {"k": column.k, "metric": column.metric}
                    | test
                    | {"unit": results.unit()}
                )
    table = Table(
        title=f"{results.dataset}: paired differences between methods",
        header=["Backbone", "Method", "vs", "Metric", "Δ", "95 % CI", "p", "n"],
        rows=rows,
        n_label_columns=4,
        notes=_delta_notes(results, flips),
        empty_message="No comparisons: the dataset has fewer than two methods per backbone.",
    )
    columns = ["dataset", "backbone", "method", "reference", "column", "probe", "k", "metric"]
    return table, pd.DataFrame(
        records, columns=[*columns, "mean_delta", "ci_low", "ci_high", "p_value", "n", "unit"]
    )


def _delta_notes(results: DatasetResults, flips: int) -> list[str]:
    if results.unit() == SEED:
        unit = (
            "n = tuning seeds (the unit of inference on a fixed split), matched by seed; the frozen "
            "backbone's single run is the reference of every seed"
        )
    else:
        unit = (
            "n = folds (the unit of inference): per fold, the mean over its tuning seeds minus the "
            "reference's, since a fold's seeds share its test clips"
        )
    return [
        f"Δ = method − reference (vs), every method against every method above it: mean over units; {unit}.",
        "95 % CI: Student-t interval of the mean Δ over the n units (t with n − 1 degrees of freedom); "
        "'n too small' below two units.",
        "p: two-sided paired sign-flip (randomisation) test over the units, exact up to 16 units (the "
        f"smallest possible p is 2/2^n: 0.25 for 3, 0.0625 for 5), beyond that {flips} random flips with "
        "p = (1 + count)/(flips + 1). p-values are per comparison, not adjusted for the number of rows.",
        "Comparisons with a reference that has no result for a metric (the frozen backbone has no head) are "
        "left out.",
    ]


def geometry_table(results: DatasetResults) -> tuple[Table, pd.DataFrame]:
    """Embedding-geometry diagnostics, mean ± std; no bold since "better" differs between diagnostics."""
    present = {key[6] for key in results.cells if key[2] == "geometry" and key[3:5] == ("last", "all")}
    metrics = [m for m in GEOMETRY_LABELS if m in present] + sorted(present - set(GEOMETRY_LABELS))
    columns = [Column(GEOMETRY_LABELS.get(metric, metric), "geometry", metric) for metric in metrics]
    rows, records = [], []
    for backbone in results.backbones:
        for method in results.methods_of(backbone):
            summaries = [results.summary(backbone, method, column) for column in columns]
            rows.append([backbone, method, *map(format_cell, summaries)])
            records += [
                {"dataset": results.dataset, "backbone": backbone, "method": method, "metric": column.metric}
                | summary
                | {"cell": format_cell(summary)}
                for column, summary in zip(columns, summaries, strict=True)
            ]
    geometry = results.settings.get("geometry", {})
    table = Table(
        title=f"{results.dataset}: embedding geometry of the test clips",
        header=["Backbone", "Method", *[column.label for column in columns]],
        rows=rows if columns else [],
        n_label_columns=2,
        notes=[
            results.replicate_note(),
            f"Computed on at most {geometry.get('max_clips', 'n/a')} test clips (subsampling seed "
            f"{geometry.get('seed', 'n/a')}). No bold: the diagnostics do not share a direction of better.",
        ],
        empty_message="No geometry rows.",
    )
    return table, pd.DataFrame(
        records, columns=["dataset", "backbone", "method", "metric", *SUMMARY_COLUMNS, "cell"]
    )


def fewshot_table(results: DatasetResults) -> tuple[Table, pd.DataFrame]:
    """Headline probe metrics against train clips per class; rows = backbone x method x probe column."""
    shots = results.shots()
    probe_columns = [column for column in results.columns if column.probe != "head"]
    rows, records = [], []
    for backbone in results.backbones if shots else []:
        for method in results.methods_of(backbone):
            for column in probe_columns:
                if all(results.values(backbone, method, column, s).empty for s in shots):
                    continue
                summaries = [results.summary(backbone, method, column, s) for s in [*shots, "all"]]
                rows.append([backbone, method, column.label, *map(format_cell, summaries)])
                records += [
                    {
                        "dataset": results.dataset,
                        "backbone": backbone,
                        "method": method,
                        "column": column.label,
                    }
                    | {"probe": column.probe, "k": column.k, "metric": column.metric, "shots": s}
                    | summary
                    | {"cell": format_cell(summary)}
                    for s, summary in zip([*shots, "all"], summaries, strict=True)
                ]
    shot_seed = results.settings.get("knn", {}).get("shot_seed", "n/a")
    table = Table(
        title=f"{results.dataset}: few-shot probes",
        header=["Backbone", "Method", "Probe", *[f"{s} shot{'s' if s != '1' else ''}" for s in shots], "all"],
        rows=rows,
        n_label_columns=3,
        notes=[
            results.replicate_note(),
            f"n shots: the train split subsampled to n clips per class (seed {shot_seed}); all: the full train "
            "split.",
            *results.probe_notes(),
        ],
        empty_message="No few-shot rows (the probes ran on the full train split only).",
    )
    columns = [
        "dataset",
        "backbone",
        "method",
        "column",
        "probe",
        "k",
        "metric",
        "shots",
        *SUMMARY_COLUMNS,
        "cell",
    ]
    return table, pd.DataFrame(records, columns=columns)


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown: a heading, the table (numbers right-aligned) and the notes as a list."""
    lines = [f"### {table.title}", ""]
    if not table.rows:
        return "\n".join([*lines, table.empty_message, ""])
    width = len(table.header)
    lines.append("| " + " | ".join(table.header) + " |")
    lines.append("|" + "|".join(":---" if i < table.n_label_columns else "---:" for i in range(width)) + "|")
    for r, row in enumerate(table.rows):
        cells = [f"**{cell}**" if (r, c) in table.bold else cell for c, cell in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Notes:", *[f"- {note}" for note in table.notes], ""]
    return "\n".join(lines)


def to_latex(table: Table) -> str:
    """A booktabs ``table`` float; a \\midrule separates backbones, bold cells use \\textbf."""
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(table.title)}}}"]
    if not table.rows:
        return "\n".join([*lines, latex_escape(table.empty_message), r"\end{table}", ""])
    spec = "l" * table.n_label_columns + "r" * (len(table.header) - table.n_label_columns)
    lines += [
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(map(latex_escape, table.header)) + r" \\",
    ]
    lines.append(r"\midrule")
    for r, row in enumerate(table.rows):
        if r and row[0] != table.rows[r - 1][0]:
            lines.append(r"\midrule")
        cells = [
            rf"\textbf{{{latex_escape(cell)}}}" if (r, c) in table.bold else latex_escape(cell)
            for c, cell in enumerate(row)
        ]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip", r"\footnotesize"]
    lines += [latex_escape(note) + r"\par" for note in table.notes]
    return "\n".join([*lines, r"\end{table}", ""])


def latex_escape(text: str) -> str:
    return "".join(LATEX_ESCAPES.get(char, char) for char in text)


def format_cell(summary: dict) -> str:
    """ "mean ± std" at DECIMALS places; the mean alone for one replicate; "n/a" (never 0) for none."""
    if summary["n"] == 0:
        return "n/a"
    if summary["n"] == 1:
        return _fixed(summary["mean"])
    return f"{_fixed(summary['mean'])} ± {_fixed(summary['std'])}"


def _format_test(test: dict) -> list[str]:
    """Δ, t-interval, p and unit count of one paired test as table cells."""
    if test["n"] == 0:
        return ["n/a", "n/a", "n/a", "0"]
    delta = _fixed(test["mean_delta"], signed=True)
    if math.isnan(test["p_value"]):
        return [delta, "n too small", "n/a", str(test["n"])]
    interval = f"[{_fixed(test['ci_low'], signed=True)}, {_fixed(test['ci_high'], signed=True)}]"
    p_value = "<0.001" if test["p_value"] < 0.001 else f"{test['p_value']:.3f}"
    return [delta, interval, p_value, str(test["n"])]


def _fixed(value: float, signed: bool = False) -> str:
    text = f"{value:+.{DECIMALS}f}" if signed else f"{value:.{DECIMALS}f}"
    return text.replace("-0.000", "0.000").replace("+0.000", "0.000") if float(text) == 0 else text


def _best_cells(block: list[list[dict]]) -> list[tuple[int, int]]:
    """(row, column) of the best mean per column at the printed precision, where two or more rows compete."""
    best = []
    for column in range(len(block[0]) if block else 0):
        means = {row: round(s[column]["mean"], DECIMALS) for row, s in enumerate(block) if s[column]["n"]}
        if len(means) >= 2:
            top = max(means.values())
            best += [(row, column) for row, mean in means.items() if mean == top]
    return best


def _method_order(present: set[str], configured: list[str], frozen: list[str], supervised: list[str]) -> list:
    """Frozen first, then the supervised baselines, then the rest; config order within each group."""
    ordered = [m for m in configured if m in present] + sorted(present - set(configured))

    def role(method: str) -> int:
        return 0 if method in frozen else 1 if method in supervised else 2

    return sorted(ordered, key=lambda method: (role(method), ordered.index(method)))


def _natural(text: str) -> tuple:
    """Sort key: numbers numerically, before words ("1" < "5" < "10" < "all" < "last")."""
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def _as_list(names) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


def _join(values) -> str:
    return ", ".join(str(value) for value in values)


def _number(value) -> str:
    return "n/a" if value is None else format(value, "g")


def _grid(values) -> str:
    return "n/a" if values is None else "[" + ", ".join(_number(v) for v in values) + "]"
