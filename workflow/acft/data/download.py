"""Verified, resumable dataset downloads and extraction that cannot write outside its target.

An archive is fetched into ``<name>.part`` (a broken transfer resumes with an HTTP Range request), checked
against its sha256 before anything is unpacked, and unpacked only after every member has been checked: no
absolute path, no ``..`` escape, no symlink or hardlink (wherever it points), no device file or FIFO.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import stat
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from ..io import atomic_dir
from ..provenance import file_sha256

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
MAX_ATTEMPTS = 5  # a transfer that keeps breaking is resumed this many times before giving up
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ZIP_SUFFIXES = (".zip",)
TRANSIENT_ERRORS = (ConnectionError, TimeoutError, http.client.IncompleteRead, urllib.error.URLError)


class ChecksumError(RuntimeError):
    """A downloaded archive does not match its expected sha256."""


class UnsafeArchiveError(RuntimeError):
    """An archive member would be written outside the extraction directory, or is a link or special file."""


class IncompleteTransferError(ConnectionError):
    """The server closed the connection before sending the whole file."""


def archive_name_of(url: str) -> str:
    """The file name of a URL's path ('https://h/a/b.zip?dl=1' -> 'b.zip')."""
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if not name:
        raise ValueError(f"cannot tell an archive name from the URL {url}; pass archive_name")
    return name


def _strip_archive_suffix(name: str) -> str:
    for suffix in sorted(TAR_SUFFIXES + ZIP_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _fetch_once(url: str, part: Path, timeout: float) -> None:
    """Append the rest of ``url`` to ``part``, asking the server to resume at its current size."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing after offset: the part file is already whole
            return
        raise
    with response:
        if offset and response.status != 206:  # the server ignored the range: start again from byte 0
            offset = 0
        length = response.headers.get("Content-Length")
        expected_total = offset + int(length) if length is not None else None
        with (
            open(part, "ab" if offset else "wb") as out,
            tqdm(
                total=expected_total, initial=offset, unit="B", unit_scale=True, desc=part.name, disable=None
            ) as progress,
        ):
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                progress.update(len(chunk))
    if expected_total is not None and part.stat().st_size < expected_total:
        raise IncompleteTransferError(f"{url}: got {part.stat().st_size} of {expected_total} bytes")


def fetch(url: str, destination: Path, timeout: float = 60) -> Path:
    """Download ``url`` to ``destination`` via ``destination.part``, resuming after broken transfers."""
    part = destination.with_name(destination.name + ".part")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            _fetch_once(url, part, timeout)
            break
        except urllib.error.HTTPError:
            raise
        except TRANSIENT_ERRORS as error:
            if attempt == MAX_ATTEMPTS:
                raise ConnectionError(
                    f"{url}: transfer failed {MAX_ATTEMPTS} times; last error: {error}"
                ) from error
            log.warning("%s: transfer broken (%s); resuming from byte %d", url, error, part.stat().st_size)
    os.replace(part, destination)
    return destination


def verify(path: Path, sha256: str) -> None:
    """Raise ChecksumError (and delete ``path``, which can never become right) if its sha256 differs."""
    actual = file_sha256(path)
    if actual != sha256.lower():
        path.unlink()
        raise ChecksumError(
            f"{path.name}: sha256 {actual} does not match the expected {sha256.lower()}; deleted it"
        )


def _inside(directory: str, target: str) -> bool:
    return os.path.commonpath([directory, target]) == directory


def _refuse_link(archive: Path, kind: str, name: str, target: str | None) -> None:
    # Dataset archives hold files and folders only. Checking where a link points is not enough: a chain of
    # symlinks longer than PATH_MAX defeats both a lexical check and tarfile's "data" filter on Python < 3.11.13
    # (CVE-2025-4517), so no link is extracted at all.
    points_to = f" -> {target!r}" if target is not None else ""
    raise UnsafeArchiveError(
        f"{archive}: member {name!r} is a {kind}{points_to}; dataset archives must hold only regular files "
        "and folders, so nothing was extracted"
    )


def _check_tar_member(member: tarfile.TarInfo, dest: str, archive: Path) -> None:
    target = os.path.normpath(os.path.join(dest, member.name))
    if os.path.isabs(member.name) or not _inside(dest, target):
        raise UnsafeArchiveError(f"{archive}: member {member.name!r} would be written outside {dest}")
    if member.issym():
        _refuse_link(archive, "symlink", member.name, member.linkname)
    if member.islnk():
        _refuse_link(archive, "hardlink", member.name, member.linkname)
    if not (member.isreg() or member.isdir()):
        raise UnsafeArchiveError(
            f"{archive}: member {member.name!r} is a device, FIFO or other special file; nothing was extracted"
        )


def _check_zip_member(info: zipfile.ZipInfo, dest: str, archive: Path) -> None:
    name = info.filename
    target = os.path.normpath(os.path.join(dest, name))
    if os.path.isabs(name) or name.startswith("\\") or not _inside(dest, target):
        raise UnsafeArchiveError(f"{archive}: member {name!r} would be written outside {dest}")
    # zipfile would write a symlink entry (Unix mode in the high 16 bits of external_attr) as a plain file
    # holding the link text; refused like a tar link, since a dataset archive has no reason to hold one
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 where the archiver recorded no Unix file type
    if kind == stat.S_IFLNK:
        _refuse_link(archive, "symlink", name, None)
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} is a device, FIFO or other special file; nothing was extracted"
        )


def safe_extract(archive: Path, dest: Path) -> None:
    """Unpack a tar or zip archive into ``dest`` after checking every member; none is written if one fails.

    Only regular files and folders are accepted: an absolute path, a ``..`` escape, any symlink or hardlink and
    any device or FIFO raises UnsafeArchiveError naming the archive and the member, before anything is written.
    """
    dest_str = os.path.realpath(dest)
    name = archive.name.lower()
    if name.endswith(ZIP_SUFFIXES) or (not name.endswith(TAR_SUFFIXES) and zipfile.is_zipfile(archive)):
        with zipfile.ZipFile(archive) as bundle:
            for info in bundle.infolist():
                _check_zip_member(info, dest_str, archive)
            bundle.extractall(dest)
    elif name.endswith(TAR_SUFFIXES) or tarfile.is_tarfile(archive):
        with tarfile.open(archive) as bundle:
            members = bundle.getmembers()
            for member in members:
                _check_tar_member(member, dest_str, archive)
            bundle.extractall(
                dest, members=members, filter="data"
            )  # the stdlib's own checks, as a second line
    else:
        raise ValueError(f"{archive}: neither a tar nor a zip archive")


def download_and_extract(
    url: str, sha256: str | None, dest_dir: Path, *, archive_name: str | None = None, timeout: float = 60
) -> Path:
    """Download ``url`` into ``dest_dir``, verify it, and unpack it into ``dest_dir/<archive stem>``.

    Idempotent: a stamp file records the sha256 of the archive that was unpacked, and a second call with the
    same checksum returns at once without touching the network. The archive is deleted once unpacked.

    Args:
        url: the archive's address (http, https or file).
        sha256: its expected checksum; None is refused, since an unverified archive is never unpacked.
        dest_dir: the directory that receives the archive and its unpacked folder.
        archive_name: file name to save the archive under (default: the URL's file name).
        timeout: seconds a stalled connection is waited for.

    Returns:
        The folder holding the archive's contents.
    """
    if not sha256:
        raise ValueError(f"no sha256 given for {url}: an archive that cannot be verified is not downloaded")
    sha256 = sha256.lower()
    dest_dir = Path(dest_dir)
    name = archive_name or archive_name_of(url)
    archive, unpacked = dest_dir / name, dest_dir / _strip_archive_suffix(name)
    stamp = dest_dir / f".{name}.sha256"
    if unpacked.is_dir() and stamp.is_file() and stamp.read_text().strip() == sha256:
        return unpacked
    dest_dir.mkdir(parents=True, exist_ok=True)
    if not archive.is_file():
        fetch(url, archive, timeout)
    verify(archive, sha256)
    with atomic_dir(unpacked) as tmp:
        safe_extract(archive, tmp)
    stamp.write_text(sha256 + "\n")
    archive.unlink()
    return unpacked


def _archive_root(unpacked: Path, archive_root: str | None) -> Path:
    if archive_root is not None:
        return unpacked / archive_root
    entries = [p for p in unpacked.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else unpacked


def ensure_downloaded(adapter_name: str, options: dict) -> None:
    """With option ``download: true``, fetch the adapter's registered archive into ``root`` if it is missing.

    Nothing happens without that option or when ``root`` already holds every file the registry expects. An
    existing, non-empty but incomplete ``root`` is never overwritten. The archive is unpacked beside ``root``
    (in ``.<root name>.download``) and its dataset folder moved onto ``root``.
    """
    from .adapters import get_adapter

    if not options.get("download"):
        return
    entry = get_adapter(adapter_name).download
    if entry is None:
        raise ValueError(
            f"adapter {adapter_name!r} has no registered download; fetch the data by hand into 'root'"
        )
    if not options.get("root"):
        raise ValueError(f"adapter {adapter_name!r}: option 'root' (where the dataset goes) is required")
    root = Path(options["root"]).expanduser().absolute()
    missing = [p for p in entry.expects if not (root / p).exists()]
    if root.is_dir() and not missing:
        return
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"{root} exists but lacks {missing}; not downloading over it: complete it by hand or move it away"
        )
    sha256 = options.get("sha256") or entry.sha256
    if not sha256:
        raise ValueError(
            f"adapter {adapter_name!r}: no sha256 is known for {entry.url}, so it is not downloaded; "
            "set the options key 'sha256' to the archive's published sha256, or fetch the data into 'root'"
        )
    if entry.sha256 and options.get("sha256") and options["sha256"].lower() != entry.sha256:
        log.warning("%s: the sha256 in the options overrides the registry's %s", adapter_name, entry.sha256)
    staging = root.parent / f".{root.name}.download"
    unpacked = download_and_extract(options.get("download_url") or entry.url, sha256, staging)
    source = _archive_root(unpacked, entry.archive_root)
    absent = [p for p in entry.expects if not (source / p).exists()]
    if absent:
        raise FileNotFoundError(
            f"the archive unpacked in {source} lacks {absent}; it is not the expected dataset"
        )
    if root.exists():
        root.rmdir()
    os.replace(source, root)
    shutil.rmtree(staging)
    log.info("%s: dataset unpacked into %s", adapter_name, root)
