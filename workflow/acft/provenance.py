"""Provenance manifests, one per output, in a tree that mirrors ``results/``.

Output ``results/<path>`` gets ``results/provenance/<path>.json`` (``provenance_path``) holding the
``params_hash`` (of the producing rule's params, the config sub-tree it depends on) and the params themselves,
package versions, git commit, host, device, start/end time and wall seconds. The records stay out of the folders
a reader opens (``results/tables/`` holds tables only). Result rows carry a different hash, the lineage hash of
their run (column ``config_hash``, see ``acft.plan.lineage``), so stale numbers can be traced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from .io import write_json

TRACKED_PACKAGES = (
    "acft",
    "torch",
    "torchaudio",
    "transformers",
    "numpy",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "soundfile",
    "snakemake",
    "tinysoundfont",
    "pretty_midi",
    "faiss-cpu",
)


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal configs give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(subtree: Any) -> str:
    """Short, stable hash (16 hex chars of sha256) of a config sub-tree."""
    return hashlib.sha256(canonical_json(subtree).encode()).hexdigest()[:16]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the repository that holds this package, with ``+dirty`` if it has local changes."""
    repo = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")


def device_description() -> str:
    try:
        import torch
    except ImportError:
        return "cpu"
    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return f"cpu:{torch.get_num_threads()}threads"


RESULTS = "results"  # the folder every output lives under
PROVENANCE = "provenance"  # the folder under RESULTS that mirrors it with one record per output


def provenance_path(output: str | os.PathLike) -> Path:
    """``<root>/results/<path>`` -> ``<root>/results/provenance/<path>.json`` (file or directory output).

    The mirror starts at the output's nearest enclosing folder named ``results``.

    Raises:
        ValueError: the output is not under a ``results`` folder.
    """
    output = Path(output)
    parents = output.parts[:-1]
    if RESULTS not in parents:
        raise ValueError(
            f"{output} is not under a '{RESULTS}' folder, so it has no place in the provenance tree"
        )
    root = len(parents) - parents[::-1].index(RESULTS)  # parts[:root] ends with the nearest "results"
    return Path(*output.parts[:root], PROVENANCE, *output.parts[root:-1], output.name + ".json")


@contextlib.contextmanager
def track(outputs, config: Any, rule: str | None = None) -> Iterator[dict]:
    """Time a block and, once it has succeeded and every output exists, write each output's provenance manifest.

    Yields a dict the caller may fill with extra facts (clip counts, chosen hyper-parameters). A record never
    outlives its output: the records of outputs that do not exist at the start (Snakemake deletes a job's
    outputs before running it) are removed, and a block that fails, or ends without writing an output, writes
    none. Each record is written atomically; if one write fails, the records this block wrote are removed.

    Raises:
        FileNotFoundError: the block succeeded but left an output unwritten (named).
    """
    if isinstance(outputs, (str, os.PathLike)):
        outputs = [outputs]
    outputs = [Path(output) for output in outputs]
    for output in outputs:
        if not output.exists():
            provenance_path(output).unlink(missing_ok=True)
        # records used to sit beside their outputs: remove one left there by an older version
        output.with_name(output.name + ".provenance.json").unlink(missing_ok=True)
    extra: dict = {}
    start_wall, start = time.time(), time.perf_counter()
    yield extra
    missing = [str(output) for output in outputs if not output.exists()]
    if missing:
        raise FileNotFoundError(
            f"rule {rule}: the job ended without writing {missing}; no provenance written"
        )
    record = {
        "rule": rule,
        "params_hash": config_hash(config),
        "config": config,
        "packages": package_versions(),
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "device": device_description(),
        "start": datetime.fromtimestamp(start_wall, UTC).isoformat(),
        "end": datetime.now(UTC).isoformat(),
        "wall_seconds": round(time.perf_counter() - start, 3),
        **extra,
    }
    written: list[Path] = []
    try:
        for output in outputs:
            write_json(provenance_path(output), record)
            written.append(provenance_path(output))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def read_provenance(output: str | os.PathLike) -> dict:
    """The provenance record of ``output`` (see ``provenance_path``)."""
    return json.loads(provenance_path(output).read_text())
