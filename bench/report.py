"""Render bench/results/*.json as the results table of bench/README.md (between the results markers).

.venv/bin/python bench/report.py        # rewrite the table in bench/README.md
.venv/bin/python bench/report.py --print
"""

from __future__ import annotations

import argparse
import json

from common import BENCH_DIR, RESULTS_DIR

START, END = "<!-- results:start -->", "<!-- results:end -->"


def spread(s: dict, scale: float = 1.0, fmt: str = "{:.2f}") -> str:
    """'median (min–max)' of a summary() dict, times ``scale``."""
    return (
        f"{fmt.format(s['median'] * scale)} ({fmt.format(s['min'] * scale)}–{fmt.format(s['max'] * scale)})"
    )


def rate(s: dict, items: int) -> str:
    """clips/s median (min–max) from a seconds summary: the fastest run is the max rate."""
    return f"{items / s['median']:,.0f} ({items / s['max']:,.0f}–{items / s['min']:,.0f})"


def met(ok: bool) -> str:
    return "yes" if ok else "**no**"


KNN_FLOOR_GOAL = 1.5  # issue 17 §5: the whole exact search costs at most 1.5x its screening product


def floor_ratio(r: dict) -> float:
    """The kNN search's median time over its screening product's median time (1 = no cost beyond the product)."""
    return r["ours_s"]["median"] / r["screening_product_s"]["median"]


def rows_knn(r: dict) -> list[list[str]]:
    return (
        [
            [
                f"kNN probe search, {r['task']} ({r['screen']} screen)",
                spread(r["ours_s"]) + " s",
                spread(r["sklearn_s"]) + " s (sklearn brute cosine)",
                f"{r['speedup']:.1f}×",
                ">= 10×, identical predictions",
                met(r["speedup"] >= 10 and r["identical_predictions"])
                + (" (predictions identical)" if r["identical_predictions"] else " (predictions differ)"),
            ]
        ]
        + (
            [
                [
                    "… its screening product alone (the floor of an exact search here)",
                    spread(r["screening_product_s"]) + " s",
                    spread(r["sklearn_s"]) + " s",
                    f"{r['ceiling_speedup']:.1f}×",
                    "context",
                    "",
                ],
                # issue 17 §5: the search against its own limit, not against a slow baseline
                [
                    "… the whole search against that product (its floor)",
                    spread(r["ours_s"]) + " s",
                    spread(r["screening_product_s"]) + " s (screening product)",
                    f"{floor_ratio(r):.2f}× the floor",
                    f"<= {KNN_FLOOR_GOAL}× the floor, identical predictions",
                    met(floor_ratio(r) <= KNN_FLOOR_GOAL and r["identical_predictions"]),
                ],
            ]
            if "screening_product_s" in r
            else []
        )
        + [
            [
                f"… {name} screen forced (what auto chooses between on this CPU)",
                spread(times) + " s",
                spread(r["sklearn_s"]) + " s",
                f"{r['sklearn_s']['median'] / times['median']:.1f}×",
                "context",
                "",
            ]
            for name, times in r.get("screen_forced_s", {}).items()
        ]
    )


def rows_linear(r: dict) -> list[list[str]]:
    return [
        [
            f"Linear probe fit, {r['task']}",
            spread(r["ours_s"]) + f" s, acc {r['ours_accuracy']:.4f}",
            spread(r["sklearn_s"]) + f" s, acc {r['sklearn_accuracy']:.4f} (LogisticRegression lbfgs)",
            f"{r['speedup']:.1f}×",
            ">= 2×, accuracy within 0.5 pt",
            met(r["speedup"] >= 2 and r["accuracy_gap_points"] <= 0.5),
        ]
    ]


def throughput_row(
    label: str,
    ours_s: dict,
    base_s: dict,
    base: str,
    clips: int,
    ratio: float,
    goal: float = 3.0,
    goal_text: str = ">= 3×",
    ratio_fmt: str = "{:.1f}×",
) -> list[str]:
    """A clips/s comparison against a ratio goal (extraction and preprocessing share it); goal 0 = context."""
    return [
        f"{label} (clips/s)",
        rate(ours_s, clips),
        rate(base_s, clips) + (f" ({base})" if base else ""),
        ratio_fmt.format(ratio),
        goal_text,
        met(ratio >= goal) if goal else "",
    ]


def rows_extract(r: dict) -> list[list[str]]:
    return [
        throughput_row(
            f"Extraction, {name}, {r['data']}",
            side["ours_s"],
            side["naive_s"],
            "per-clip loop",
            r["clips"],
            side["ratio"],
        )
        for name, side in r["sides"].items()
    ]


def rows_preprocess(r: dict) -> list[list[str]]:
    """Against its library floor (goal >= 0.8 of it); librosa.load as context (records before the floor:
    the old >= 3x goal against librosa)."""
    label = f"Preprocessing, {r['data']}"
    if "floor_s" not in r:
        return [
            throughput_row(
                label, r["ours_s"], r["librosa_s"], "librosa.load per file", r["clips"], r["ratio"]
            )
        ]
    return [
        throughput_row(
            label,
            r["ours_s"],
            r["floor_s"],
            "library floor: soundfile + torchaudio Resample per file",
            r["clips"],
            r["floor_ratio"],
            goal=0.8,
            goal_text=">= 0.8× the floor",
            ratio_fmt="{:.2f}×",
        ),
        throughput_row(
            "… against librosa.load per file (soxr_hq, a cheaper filter)",
            r["ours_s"],
            r["librosa_s"],
            "",
            r["clips"],
            r["ratio"],
            goal=0,
            goal_text="context",
            ratio_fmt="{:.2f}×",
        ),
    ]


def rows_knn_memory(r: dict) -> list[list[str]]:
    out = []
    sklearn = next((row for row in r["rows"] if row["side"] == "sklearn"), None)
    for row in r["rows"]:
        if row["side"] != "ours":
            continue
        out.append(
            [
                f"kNN peak working memory, {r['task']}, search={row['search']}, chunk_size={row['chunk_size']}",
                f"{row['working_bytes'] / 2**20:,.0f} MiB",
                f"{sklearn['working_bytes'] / 2**20:,.0f} MiB (sklearn)" if sklearn else "",
                "",
                "reported",
                "",
            ]
        )
    return out


def rows_rerun(r: dict) -> list[list[str]]:
    out = [
        [
            f"Snakemake no-op rerun, {r['jobs']} jobs",
            spread(r["noop_rerun"]) + " s",
            "",
            "",
            f"<= {r['goal_s']:.0f} s",
            met(r["noop_rerun"]["median"] <= r["goal_s"]),
        ]
    ]
    if "paper_dry_run" in r:
        dry = r["paper_dry_run"]
        out.append([f"Paper preset dry run ({dry['jobs']} jobs)", spread(dry) + " s", "", "", "reported", ""])
    return out


def rows_demo(r: dict) -> list[list[str]]:
    minutes = r["demo"]
    return [
        [
            f"Demo end to end (`make demo` after set-up, {r['jobs']} jobs), minutes",
            spread(minutes, 1 / 60),
            "",
            "",
            "<= 10 min",
            met(minutes["median"] <= 600),
        ]
    ]


def rows_cache_dtype(r: dict) -> list[list[str]]:
    rows = []
    for dtype, d in r["dtypes"].items():
        if dtype == "float32":
            continue
        rows.append(
            [
                f"audio cache as {dtype}, FSDD {r['clips']} clips, frozen {r['backbone']}",
                f"{d['bytes'] / 2**20:.1f} MiB; embedding cosine ≥ {d['min_cosine']:.6f}, "
                f"relative L2 ≤ {d['max_relative_l2']:.2e}; LOO kNN@5 predictions {100 * d['loo_knn5_prediction_agreement']:.2f} % equal",
                f"{r['dtypes']['float32']['bytes'] / 2**20:.1f} MiB (float32)",
                f"{d['bytes_vs_float32']:.2f}× disk",
                "half the disk, embeddings within 1e-2 relative",
                met(d["bytes_vs_float32"] <= 0.5 and d["max_relative_l2"] <= 1e-2),
            ]
        )
    return rows


def rows_scaling(r: dict) -> list[list[str]]:
    """One row per stage: fitted growth exponents of time and peak memory over the sizes run."""

    def exp(x) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    label = r.get("label", "Scaling")
    sizes = "/".join(f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n) for n in r["sizes"])
    rows = []
    for stage, s in r["stages"].items():
        ran = [row for row in s["rows"] if "seconds" in row]
        skipped = [row["clips"] for row in s["rows"] if "skipped" in row]
        memory = "/".join(f"{row['peak_rss_bytes'] / 2**20:,.0f}" for row in ran)
        seconds = ", ".join(f"{row['seconds']:,.1f}" for row in ran)
        text = (
            f"time exponent {exp(s['time_exponent'])} ({seconds} s); "
            f"peak RSS {memory} MiB, anon exponent {exp(s['peak_anon_exponent'])}"
        )
        if "memory_bounded" in s:
            text += f", memory bounded: {'yes' if s['memory_bounded'] else 'no'}"
        if skipped:
            text += f"; skipped at {', '.join(map(str, skipped))} clips (--max-extract-hours)"
        goal = (
            "reported (N_train × N_test)" if s["met"] is None and stage == "knn" else "time exponent <= 1.1"
        )
        ok = "" if s["met"] is None else met(s["met"] and s.get("memory_bounded", True) is not False)
        rows.append([f"{label}, {stage}, N = {sizes} clips of 1–10 s", text, "", "", goal, ok])
    gib = 2**30
    footprint = "; ".join(
        f"{d['clips']:,}: {d['audio_hours']:.1f} h, WAV {d['wav_bytes'] / gib:.2f}, cache "
        + (
            f"{d['cache_bytes']['float32'] / gib:.2f} (f16/int16 {d['cache_bytes']['int16'] / gib:.2f})"
            if "cache_bytes" in d
            else "n/a"
        )
        for d in r["footprint"]
    )
    rows.append(
        [
            f"{label} data: audio and disk (GiB) per size",
            footprint,
            "",
            "",
            "reported",
            "",
        ]
    )
    return rows


def rows_tune_overhead(r: dict) -> list[list[str]]:
    split = r["epoch_split_share"]
    shares = ", ".join(f"{name.replace('_', ' ')} {100 * share:.0f} %" for name, share in split.items())
    return [
        [
            f"Trainer step time vs a bare PyTorch loop, {r['task']} (ms per optimiser step)",
            spread(r["trainer_train_s_per_step"], 1e3, "{:.0f}"),
            spread(r["bare_s_per_step"], 1e3, "{:.0f}") + " (bare loop)",
            f"{r['ratio']:.2f}",
            f">= {r['goal']} (bare / trainer)",
            met(r["met"]),
        ],
        [
            "… the trainer's whole epoch (per-epoch val kNN, checkpoint, logging) per step",
            spread(r["trainer_epoch_s_per_step"], 1e3, "{:.0f}") + f"; epoch: {shares}",
            spread(r["bare_s_per_step"], 1e3, "{:.0f}"),
            f"{r['ratio_epoch']:.2f}",
            "context",
            "",
        ],
    ]


# Published sizes of the registered datasets (clips, hours of audio), for the disk each one's cache needs.
# VocalSound publishes no total duration: sum its manifest's duration_s.
DATASET_HOURS = {
    "ESC-50": (2_000, 2.78),  # 5 s each
    "UrbanSound8K": (8_732, 8.75),
    "GTZAN": (1_000, 8.33),  # 30 s each
    "Speech Commands v2": (105_829, 29.4),  # at most 1 s each: an upper bound
    "FSD50K (dev + eval)": (51_197, 108.3),  # dev 80.4 h, eval 27.9 h
    "NSynth": (305_979, 340.0),  # 4 s each
}


def rows_dataset_footprint(r: dict) -> list[list[str]]:
    """The audio cache each registered dataset needs, at the bytes per audio hour the scaling run measured."""
    largest = max(r["footprint"], key=lambda d: d["clips"])
    per_hour = {dtype: b / largest["audio_hours"] for dtype, b in largest["cache_bytes"].items()}
    gb = 1e9
    return [
        [
            f"Disk: audio cache of {name}, {clips:,} clips, {hours:g} h, at 16 kHz",
            f"float32 {hours * per_hour['float32'] / gb:.1f} GB; float16 / int16 {hours * per_hour['float16'] / gb:.1f} GB",
            "",
            "",
            "reported (`preprocess.dtype`)",
            "",
        ]
        for name, (clips, hours) in DATASET_HOURS.items()
    ]


def machine_name(record: dict) -> str:
    """The CPU and its vector ISA (records from before the ISA list name AMX alone)."""
    machine = record["machine"]
    isa = machine.get("isa") or (["AMX-BF16"] if machine.get("amx_bf16") else ["no AMX"])
    return f"{machine.get('cpu', 'unknown CPU')} ({', '.join(isa)})"


# (result file, renderer): a file may feed several renderers.
RENDERERS = [
    ("knn", rows_knn),
    ("linear", rows_linear),
    ("extract", rows_extract),
    ("preprocess", rows_preprocess),
    ("knn_memory", rows_knn_memory),
    ("rerun", rows_rerun),
    ("demo", rows_demo),
    ("cache_dtype", rows_cache_dtype),
    ("scaling", rows_scaling),
    ("scaling", rows_dataset_footprint),
    ("tune_overhead", rows_tune_overhead),
]


def table() -> str:
    header = ["Benchmark", "Ours: median (min–max)", "Baseline: median (min–max)", "Ratio", "Goal", "Met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * 3 + [":---"] * 2) + "|"]
    runs = set()
    for name, render in RENDERERS:
        path = RESULTS_DIR / f"{name}.json"
        if not path.exists():
            lines.append(f"| {name}: not run yet (`bench/bench_{name}.py`) | | | | | |")
            continue
        record = json.loads(path.read_text())
        runs.add(
            f"{name}: {record['date']}, commit {record['machine']['git_commit']}, {machine_name(record)}"
        )
        lines += ["| " + " | ".join(row) + " |" for row in render(record)]
    return "\n".join(lines) + "\n\nMeasured: " + "; ".join(sorted(runs)) + "."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--print", action="store_true", help="print the table instead of writing README.md")
    args = parser.parse_args()
    rendered = table()
    if args.print:
        print(rendered)
        return
    readme = BENCH_DIR / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{rendered}\n{END}{tail}")
    print(f"rewrote the table in {readme}")


if __name__ == "__main__":
    main()
