"""Atomic file output: a reader never sees a half-written file, a crash never leaves one behind."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
log = logging.getLogger(__name__)
TEMP_NAME = "[a-z0-9_]{8}"  # mkstemp's random part: 8 characters of tempfile's alphabet, never a dot


def remove_stale_temps(path: Path, suffix: str) -> None:
    """Remove ``.{name}.XXXXXXXX{suffix}`` files beside ``path``: what ``atomic_path`` left when killed.

    A SIGKILL (out of memory, a cluster's time limit) skips the cleanup of ``atomic_path``. Snakemake never
    runs two jobs for one output, so a temp file of this output at the start of a write is such a leftover.
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{TEMP_NAME}{re.escape(suffix)}")
    with os.scandir(path.parent) as entries:
        stale = [e.path for e in entries if pattern.fullmatch(e.name) and not e.is_dir(follow_symlinks=False)]
    for name in stale:
        log.warning("removing %s, left by an interrupted write of %s", name, path)
        Path(name).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temp file lives in the same directory so the final ``os.replace`` is atomic on POSIX. Temp files an
    interrupted earlier write of ``path`` left behind are removed first.
    """
    path = Path(path)
    suffix = suffix if suffix is not None else ".tmp"
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path, suffix)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs are shared on clusters
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, obj, indent: int = 2) -> None:
    """Write ``obj`` as JSON atomically (sorted keys, so identical content gives identical bytes)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, sort_keys=True, default=str) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_parquet(df, path: str | os.PathLike, **kwargs) -> None:
    """Write a pandas DataFrame to Parquet atomically, without the pandas index."""
    with atomic_path(path, suffix=".parquet.tmp") as tmp:
        df.to_parquet(tmp, index=False, **kwargs)


def write_csv(df, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".csv.tmp") as tmp:
        df.to_csv(tmp, index=False)
