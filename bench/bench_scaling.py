"""How each stage's cost grows with the number of clips (issue 17 §1): time and peak memory at N clips, fitted.

Data (generated, not timed): ``max(--sizes)`` clips of 1-10 s each (seeded uniform durations), 16-bit mono WAV
at ``--source-rate`` (8 kHz by default, so preprocessing resamples) written through soundfile. Each clip is one
of ``--classes`` classes: a class-specific chord of two or three tones with a class-specific amplitude
modulation, random phases, a small pitch jitter and white noise at a random level. A dataset of N clips is the
first N of them (a CSV table of path and label per size), so the sizes are nested.

Stages, per size, each in a fresh Python process (so its peak memory is its own), in workflow order:

- ``manifest``: ``acft.data.manifest.build_manifest`` with the ``csv`` adapter (the generic importer for a
  table of paths and labels; seeded stratified 70/10/20 split), which decodes every file once;
- ``preprocess``: ``acft.data.preprocess.preprocess`` to 16 kHz with the schema's defaults (float32 cache);
- ``extract_hf``: ``acft.embed.extract_embeddings`` with a tiny random-init wav2vec2 (``tests/tiny_models.py``,
  32-d, pooling mean), batch 32, CPU;
- ``extract_resemblyzer``: the same with resemblyzer (the schema's defaults); skipped, with the reason in the
  JSON, for a size of more than ``--max-extract-hours`` of audio;
- ``knn`` and ``linear``: ``acft.probes.run.run_probe`` on the tiny model's embedding Parquet (train clips as
  the bank / training set, test clips scored), with the schema's ``probes.knn`` / ``probes.linear`` settings.

Per stage and size: the stage's own seconds (measured inside the child around the stage call, imports and
set-up excluded), the child's whole wall time, its peak RSS (``ru_maxrss`` of that child via ``os.wait4``),
and its peak anonymous memory (``RssAnon`` in ``/proc/self/status``, sampled every 20 ms by a thread, minus
the value just before the stage: the stage's working memory). RSS counts the pages of the memory-mapped cache
that a stage has touched (reclaimable page cache, not working memory), so "peak memory bounded" is judged on
the anonymous peak: its fitted exponent must be below 0.1 for the streaming stages (preprocess, extraction).
Exponents are least-squares slopes of log(y) on log(N) over the sizes run (goal: time exponent <= 1.1 for
every stage but kNN, whose search is N_train x N_test pairs by design: reported, no goal).

Also recorded per size: audio hours, WAV bytes, the float32 cache's bytes as written and the computed bytes of
the same cache stored as float16 / int16 (``preprocess.dtype``; 2 bytes per sample, the same .npy header).
Each size's cache is deleted after its stages unless ``--keep`` (64k clips is ~98 h of audio: 5.6 GB of
8 kHz WAV and 22.5 GB of float32 cache). Every child runs on one thread (torch, OpenMP and MKL), as the
workflow's jobs do.

Run: ``.venv/bin/python bench/bench_scaling.py [--sizes 1000 4000 16000 64000] [--max-extract-hours 30]``;
smoke test: ``--sizes 200 800``. ``--work DIR`` keeps the generated data there (default: a temp dir).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import REPO, write_result  # noqa: E402

STAGES = ("manifest", "preprocess", "extract_hf", "extract_resemblyzer", "knn", "linear")
STREAMING = ("preprocess", "extract_hf", "extract_resemblyzer")
TARGET_RATE = 16000
TIME_GOAL = 1.1
BOUNDED_EXPONENT = 0.1
SAMPLE_EVERY_S = 0.02


# ---------------------------------------------------------------------------------------------- data


def durations(n: int, seed: int, low: float, high: float) -> np.ndarray:
    """Seeded uniform clip durations in seconds (a prefix of a longer draw is the shorter draw)."""
    return np.random.default_rng([seed, 1]).uniform(low, high, n)


def clip_audio(i: int, label: int, n: int, rate: int, seed: int) -> np.ndarray:
    """Class-patterned audio of clip ``i``: the class's chord, amplitude-modulated, plus white noise."""
    rng = np.random.default_rng([seed, 2, i])
    base = 110.0 * 2 ** (label * 5 / 12)  # classes a fourth apart
    chord = [base, base * 1.25, base * 1.5][: 2 + label % 2]
    t = np.arange(n, dtype=np.float32) / np.float32(rate)
    jitter = rng.uniform(0.98, 1.02)
    wave = np.zeros(n, dtype=np.float32)
    for f in chord:
        wave += np.sin(np.float32(2 * np.pi * f * jitter) * t + np.float32(rng.uniform(0, 2 * np.pi)))
    wave *= 1 + 0.5 * np.sin(np.float32(2 * np.pi * (1 + label % 4)) * t)  # class-specific modulation rate
    wave += rng.standard_normal(n, dtype=np.float32) * np.float32(rng.uniform(0.05, 0.5))
    return wave * np.float32(rng.uniform(0.2, 0.8) / max(1e-6, float(np.abs(wave).max())))


def clip_path(i: int) -> str:
    return f"{i // 1000:03d}/clip{i:06d}.wav"


def generate(work: Path, n: int, args) -> None:
    """Write clips 0..n-1 under work/wav (those already there, from an earlier run with the same settings,
    are kept) and work/meta.json."""
    import soundfile as sf
    from tqdm import tqdm

    settings = {k: getattr(args, k) for k in ("seed", "source_rate", "min_s", "max_s", "classes")}
    meta_path = work / "meta.json"
    done = 0
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        done = meta["clips"] if meta["settings"] == settings else 0
    if done >= n:
        return
    seconds = durations(n, args.seed, args.min_s, args.max_s)
    labels = np.random.default_rng([args.seed, 3]).integers(0, args.classes, n)
    for i in tqdm(range(done, n), desc=f"generate {n} clips", initial=done, total=n, disable=None):
        path = work / "wav" / clip_path(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        frames = round(seconds[i] * args.source_rate)
        sf.write(path, clip_audio(i, int(labels[i]), frames, args.source_rate, args.seed), args.source_rate,
                 subtype="PCM_16")  # fmt: skip
    meta_path.write_text(json.dumps({"clips": n, "settings": settings}))


def write_table(work: Path, n: int, args) -> Path:
    """work/csv/n{n}.csv: the first n clips' relative paths and labels (the csv adapter's input)."""
    import pandas as pd

    labels = np.random.default_rng([args.seed, 3]).integers(0, args.classes, max(args.sizes))[:n]
    path = work / "csv" / f"n{n}.csv"
    path.parent.mkdir(exist_ok=True)
    pd.DataFrame({"path": [clip_path(i) for i in range(n)], "labels": [f"class{c}" for c in labels]}).to_csv(
        path, index=False
    )
    return path


def npy_header_bytes(path: Path) -> int:
    with open(path, "rb") as file:
        version = np.lib.format.read_magic(file)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(file)
        else:
            np.lib.format.read_array_header_2_0(file)
        return file.tell()


def footprint(work: Path, size_dir: Path, n: int, args) -> dict:
    """Audio hours and disk bytes of one size: WAVs, the float32 cache, and that cache as float16 / int16."""
    seconds = durations(n, args.seed, args.min_s, args.max_s)
    frames = np.round(seconds * args.source_rate).astype(np.int64)
    wav_bytes = sum((work / "wav" / clip_path(i)).stat().st_size for i in range(n))
    cache = size_dir / f"sr{TARGET_RATE}" / "waveforms.npy"
    record = {
        "clips": n,
        "audio_hours": float(frames.sum() / args.source_rate / 3600),
        "wav_bytes": int(wav_bytes),
    }
    if cache.exists():
        header = npy_header_bytes(cache)
        samples = (cache.stat().st_size - header) // 4
        index_bytes = (size_dir / f"sr{TARGET_RATE}" / "index.parquet").stat().st_size
        record["cache_samples"] = int(samples)
        record["cache_bytes"] = {
            "float32": int(cache.stat().st_size),
            "float16": int(header + 2 * samples),  # computed: same header length, 2 bytes per sample
            "int16": int(header + 2 * samples),
        }
        record["cache_index_bytes"] = int(index_bytes)
    return record


# ------------------------------------------------------------------------------------- the child process


class MemorySampler:
    """Peak RssAnon / VmRSS of this process, sampled by a daemon thread."""

    def __init__(self):
        self.peak = {"RssAnon": 0, "VmRSS": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def read() -> dict:
        out = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "VmRSS"):
                out[key] = int(value.split()[0]) * 1024
        return out

    def _run(self):
        while not self._stop.is_set():
            for key, value in self.read().items():
                self.peak[key] = max(self.peak[key], value)
            self._stop.wait(SAMPLE_EVERY_S)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        for key, value in self.read().items():
            self.peak[key] = max(self.peak[key], value)


def child(stage: str, size_dir: Path, work: Path, out: Path) -> None:
    """Run one stage on one size, write {"seconds", memory...} to ``out``."""
    import io

    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(REPO / "tests"))
    from schema_defaults import backbone_config, preprocess_settings, probe_settings

    from acft.identity import Run

    cache = size_dir / f"sr{TARGET_RATE}"
    if stage == "manifest":
        from acft.data.manifest import build_manifest

        options = {"root": str(work / "wav"), "csv": str(size_dir / "table.csv")}

        def run():
            build_manifest("scaling", {"adapter": "csv", "options": options}, size_dir)
    elif stage == "preprocess":
        from acft.data.preprocess import preprocess

        def run():
            preprocess(size_dir / "manifest.parquet", cache, sample_rate=TARGET_RATE, **preprocess_settings())
    elif stage.startswith("extract_"):
        from acft.embed import extract_embeddings

        if stage == "extract_hf":
            tiny = json.loads((work / "tiny.json").read_text())
            backbone = backbone_config(**tiny, pooling="mean")
        else:
            backbone = backbone_config("resemblyzer")
            from acft.models import build_encoder

            build_encoder(backbone)  # load resemblyzer's weights once, untimed (its import and file read)

        def run():
            with contextlib.redirect_stdout(io.StringIO()):
                extract_embeddings(
                    cache, backbone, size_dir / f"{stage}.parquet", batch_size=32, device="cpu"
                )
    else:
        from acft.probes.run import run_probe

        def run():
            run_probe(stage, size_dir / "extract_hf.parquet", size_dir / "labels.txt",
                      size_dir / f"{stage}.parquet", run=Run("scaling", "tiny", "frozen", 0, 0),
                      settings=probe_settings(stage))  # fmt: skip

    baseline = MemorySampler.read()
    with MemorySampler() as memory:
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
    out.write_text(
        json.dumps(
            {
                "seconds": seconds,
                "baseline_anon_bytes": baseline["RssAnon"],
                "peak_anon_bytes": memory.peak["RssAnon"],
                "working_anon_bytes": memory.peak["RssAnon"] - baseline["RssAnon"],
                "peak_rss_sampled_bytes": memory.peak["VmRSS"],
                "self_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


def run_child(stage: str, size_dir: Path, work: Path) -> dict:
    """Run ``stage`` in a fresh process; its result plus the child's wall time and ru_maxrss (os.wait4)."""
    out = size_dir / f"{stage}.result.json"
    log = size_dir / f"{stage}.log"
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    command = [sys.executable, __file__, "--child", stage, "--dir", str(size_dir), "--work", str(work)]
    start = time.perf_counter()
    with open(log, "w") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(
            f"stage {stage} at {size_dir.name} failed ({process.returncode}):\n{log.read_text()[-3000:]}"
        )
    result = json.loads(out.read_text())
    return {**result, "wall_s": wall, "peak_rss_bytes": usage.ru_maxrss * 1024}


# -------------------------------------------------------------------------------------------- the parent


def exponent(sizes: list[int], values: list[float]) -> float | None:
    """Least-squares slope of log(value) on log(size); None with fewer than two usable points."""
    pairs = [(n, v) for n, v in zip(sizes, values, strict=True) if v is not None and v > 0]
    if len(pairs) < 2:
        return None
    x, y = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    return float(np.polyfit(x, y, 1)[0])


def summarise(stage: str, rows: list[dict]) -> dict:
    ran = [r for r in rows if "seconds" in r]
    sizes = [r["clips"] for r in ran]
    time_exp = exponent(sizes, [r["seconds"] for r in ran])
    anon_exp = exponent(sizes, [max(r["working_anon_bytes"], 1) for r in ran])
    summary = {
        "rows": rows,
        "sizes_run": sizes,
        "time_exponent": time_exp,
        "peak_rss_exponent": exponent(sizes, [r["peak_rss_bytes"] for r in ran]),
        "peak_anon_exponent": exponent(sizes, [r["peak_anon_bytes"] for r in ran]),
        "working_anon_exponent": anon_exp,
        "streams": stage in STREAMING,
    }
    if stage == "knn":
        summary["goal"] = "reported (N_train x N_test pairs by design)"
        summary["met"] = None
    else:
        summary["goal"] = f"time exponent <= {TIME_GOAL}"
        summary["met"] = None if time_exp is None else bool(time_exp <= TIME_GOAL)
    if stage in STREAMING:
        peak_exp = summary["peak_anon_exponent"]
        summary["memory_bounded"] = None if peak_exp is None else bool(peak_exp < BOUNDED_EXPONENT)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000, 64000])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--max-extract-hours", type=float, default=30.0,
                        help="skip resemblyzer extraction (recorded, not silently) above this much audio")  # fmt: skip
    parser.add_argument("--source-rate", type=int, default=8000, choices=(8000, 16000))
    parser.add_argument("--min-s", type=float, default=1.0)
    parser.add_argument("--max-s", type=float, default=10.0)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="data directory (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep each size's cache and outputs")
    parser.add_argument(
        "--name",
        default="scaling",
        help="result name: bench/results/<name>.json (e.g. a rerun of some stages beside the full run)",
    )
    parser.add_argument("--label", default="Scaling", help="what the README table calls this run's rows")
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dir, args.work, args.dir / f"{args.child}.result.json")
        return
    args.sizes = sorted(set(args.sizes))
    with workdir(args.work) as work:
        record = measure(work, args)
    write_result(args.name, record | {"label": args.label})


@contextlib.contextmanager
def workdir(path: Path | None):
    """The given directory, or a temporary one removed afterwards."""
    if path is None:
        with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
            yield Path(tmp)
    else:
        path.mkdir(parents=True, exist_ok=True)
        yield path


def measure(work: Path, args) -> dict:
    from tqdm import tqdm

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_models import save_tiny_model

    mean_s = (args.min_s + args.max_s) / 2
    need = max(args.sizes) * mean_s * (2 * args.source_rate + 4 * TARGET_RATE)
    free = shutil.disk_usage(work).free
    print(
        f"work dir {work}: about {need / 2**30:.1f} GiB needed at the largest size, {free / 2**30:.1f} GiB free"
    )
    if need > free:
        raise SystemExit("not enough disk for the largest size: choose smaller --sizes or another --work")
    started = time.perf_counter()
    generate(work, max(args.sizes), args)
    generate_s = time.perf_counter() - started
    if not (work / "tiny.json").exists():
        tiny = save_tiny_model("wav2vec2_layer", work / "tiny_wav2vec2")
        (work / "tiny.json").write_text(json.dumps(tiny))

    data, rows, skipped = [], {stage: [] for stage in args.stages}, []
    steps = [(n, stage) for n in args.sizes for stage in args.stages]
    progress = tqdm(steps, desc="stages", disable=None)
    for n in args.sizes:
        size_dir = work / f"n{n}"
        shutil.rmtree(size_dir, ignore_errors=True)
        size_dir.mkdir()
        shutil.copy(write_table(work, n, args), size_dir / "table.csv")
        hours = float(durations(n, args.seed, args.min_s, args.max_s).sum() / 3600)
        for stage in args.stages:
            progress.set_postfix_str(f"{stage} n={n}")
            if stage == "extract_resemblyzer" and hours > args.max_extract_hours:
                message = (
                    f"extract_resemblyzer at {n} clips skipped: {hours:.1f} h of audio is more than "
                    f"--max-extract-hours {args.max_extract_hours:g}"
                )
                print(message)
                skipped.append(message)
                rows[stage].append({"clips": n, "audio_hours": hours, "skipped": message})
            else:
                result = run_child(stage, size_dir, work)
                rows[stage].append({"clips": n, "audio_hours": hours, **result})
                print(
                    f"n={n:>6} {stage:<20} {result['seconds']:9.2f} s  (child wall {result['wall_s']:.1f} s), "
                    f"peak RSS {result['peak_rss_bytes'] / 2**20:,.0f} MiB, peak anon "
                    f"{result['peak_anon_bytes'] / 2**20:,.0f} MiB (+{result['working_anon_bytes'] / 2**20:,.0f})"
                )
            progress.update()
        data.append(footprint(work, size_dir, n, args))
        if not args.keep:
            shutil.rmtree(size_dir / f"sr{TARGET_RATE}", ignore_errors=True)
    progress.close()

    stages = {stage: summarise(stage, stage_rows) for stage, stage_rows in rows.items()}
    for stage, s in stages.items():
        fmt = lambda x: "n/a" if x is None else f"{x:.2f}"  # noqa: E731
        bounded = f", memory bounded: {s['memory_bounded']}" if "memory_bounded" in s else ""
        print(
            f"{stage:<20} time exponent {fmt(s['time_exponent'])} (goal: {s['goal']}), peak anon exponent "
            f"{fmt(s['peak_anon_exponent'])}, peak RSS exponent {fmt(s['peak_rss_exponent'])}{bounded}"
        )
    return {
        "sizes": args.sizes,
        "data": (
            f"synthetic, {args.classes} classes of tone chords + noise, {args.min_s:g}-{args.max_s:g} s clips "
            f"(uniform), 16-bit WAV at {args.source_rate} Hz -> {TARGET_RATE} Hz cache"
        ),
        "settings": {
            k: getattr(args, k)
            for k in ("seed", "source_rate", "min_s", "max_s", "classes", "max_extract_hours")
        }
        | {"stages": args.stages},  # fmt: skip
        "generate_s": generate_s,
        "footprint": data,
        "stages": stages,
        "skipped": skipped,
        "time_goal_exponent": TIME_GOAL,
        "bounded_exponent": BOUNDED_EXPONENT,
        "threads": 1,
        "total_s": time.perf_counter() - started,
    }


if __name__ == "__main__":
    main()
