"""Shared test set-up: one torch thread per process (2 cores shared), repo paths, and FSDD data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FSDD = SHARED_DATA / "fsdd"

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test that reaches for the hub must fail, not hang
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a hard requirement
    pass


@pytest.fixture(scope="session")
def fsdd_dir() -> Path:
    if not (FSDD / "recordings").is_dir():
        pytest.fail(f"FSDD test data not found at {FSDD} (expected ../shared/data/fsdd beside the repo)")
    return FSDD


@pytest.fixture(scope="session")
def tiny_workflow(tmp_path_factory):
    """One complete run of the tiny configuration, shared by every end-to-end assertion.

    Returns (workdir, config); the code lives in ``workdir/code`` (a private copy).
    """
    from tiny_models import save_tiny_model
    from tiny_workflow import copy_code, snakemake, tiny_config, write_config

    workdir = tmp_path_factory.mktemp("workflow")
    copy_code(workdir / "code")
    config = tiny_config(save_tiny_model("wav2vec2_layer", workdir / "tiny_wav2vec2"))
    # someone's own WAV files in class sub-folders, added with nothing but a config change
    own = workdir / "my_sounds"
    for digit in ("0", "1", "2"):
        (own / f"digit_{digit}").mkdir(parents=True)
        for index in range(5, 25):
            src = FSDD / "recordings" / f"{digit}_george_{index}.wav"
            (own / f"digit_{digit}" / src.name).write_bytes(src.read_bytes())
    config["datasets"]["mine"] = {"adapter": "folder", "options": {"root": str(own)}}
    config["experiments"].append(
        {"datasets": ["mine"], "backbones": ["tiny"], "methods": ["frozen", "supcon"], "seeds": [0]}
    )
    write_config(workdir, config)
    trace = workdir / "import_trace"  # each job's loaded acft modules (tests/import_trace/sitecustomize.py)
    trace.mkdir()
    environment = {
        **os.environ,
        "ACFT_TRACE_IMPORTS": str(trace),
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO / "tests" / "import_trace"), os.environ.get("PYTHONPATH")])
        ),
    }
    result = snakemake(workdir, "--cores", "2", env=environment)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir, config
