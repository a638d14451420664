"""Downloads: resumable, verified before extraction, and extraction that refuses to escape its directory.

Served by http.server on 127.0.0.1 (port 0) in a thread; the server can drop a connection midway or ignore
Range requests.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from acft.data.adapters import get_adapter
from acft.data.download import (
    ChecksumError,
    UnsafeArchiveError,
    download_and_extract,
    ensure_downloaded,
    safe_extract,
)

from fixtures_datasets import audio_bytes

PAYLOAD = {"pkg/a.txt": b"alpha\n", "pkg/sub/b.bin": bytes(range(256)) * 64}


class ArchiveServer:
    """Serves ``files`` (URL path -> bytes) with HTTP Range support; records each request's Range header."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.drop_after: int | None = None  # the next response is cut after this many body bytes
        self.honour_range = True
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(self.path.split("?")[0])
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range") and server.honour_range:
                    start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if server.drop_after is not None:
                    body, server.drop_after = body[: server.drop_after], None
                    self.close_connection = True
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server():
    archive_server = ArchiveServer()
    archive_server.thread.start()
    yield archive_server
    archive_server.httpd.shutdown()
    archive_server.httpd.server_close()


def make_tar(members: dict[str, bytes], links: tuple[tuple[str, str, bytes], ...] = ()) -> bytes:
    """A .tar.gz of regular files plus (name, target, type) link members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target, kind in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    return buffer.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def all_files(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name,make", [("data.tar.gz", make_tar), ("data.zip", make_zip)])
def test_download_verifies_extracts_and_is_idempotent(server, tmp_path, name, make):
    archive = make(PAYLOAD)
    server.files[f"/files/{name}"] = archive
    unpacked = download_and_extract(server.url(f"/files/{name}?dl=1"), sha256(archive), tmp_path / "dl")
    assert unpacked == tmp_path / "dl" / "data"
    assert {p: (unpacked / p).read_bytes() for p in all_files(unpacked)} == PAYLOAD
    assert not (tmp_path / "dl" / name).exists()  # the archive is deleted once unpacked
    assert len(server.requests) == 1
    assert download_and_extract(server.url(f"/files/{name}"), sha256(archive), tmp_path / "dl") == unpacked
    assert len(server.requests) == 1  # the second call did not touch the network


def test_corrupted_archive_is_never_extracted(server, tmp_path):
    archive = make_tar(PAYLOAD)
    corrupted = bytearray(archive)
    corrupted[len(corrupted) // 2] ^= 0xFF
    server.files["/data.tar.gz"] = bytes(corrupted)
    with pytest.raises(ChecksumError, match=sha256(archive)):
        download_and_extract(server.url("/data.tar.gz"), sha256(archive), tmp_path / "dl")
    assert all_files(tmp_path / "dl") == set()  # nothing unpacked, the bad archive deleted, no .part left


def test_unknown_checksum_is_refused_before_downloading(server, tmp_path):
    server.files["/data.zip"] = make_zip(PAYLOAD)
    with pytest.raises(ValueError, match="no sha256"):
        download_and_extract(server.url("/data.zip"), None, tmp_path / "dl")
    assert server.requests == []


@pytest.mark.parametrize("make", [make_tar, make_zip])
def test_member_escaping_with_dotdot_is_refused(server, tmp_path, make):
    archive = make({"pkg/ok.txt": b"fine", "pkg/../../evil.txt": b"owned"})
    name = "bad.tar.gz" if make is make_tar else "bad.zip"
    server.files[f"/{name}"] = archive
    with pytest.raises(UnsafeArchiveError, match="evil.txt"):
        download_and_extract(server.url(f"/{name}"), sha256(archive), tmp_path / "dl")
    assert not (tmp_path / "evil.txt").exists()
    assert not any(p.name in ("ok.txt", "evil.txt") for p in tmp_path.rglob("*"))  # nothing extracted at all


@pytest.mark.parametrize(
    "members,links,message",
    [
        ({"/abs.txt": b"x"}, (), "abs.txt"),
        ({"pkg/a.txt": b"x"}, (("pkg/link", "../../outside", tarfile.SYMTYPE),), "symlink"),
        ({"pkg/a.txt": b"x"}, (("pkg/abs_link", "/etc/passwd", tarfile.SYMTYPE),), "symlink"),
        ({"pkg/a.txt": b"x"}, (("pkg/hard", "../outside", tarfile.LNKTYPE),), "hardlink"),
        ({"pkg/a.txt": b"x"}, (("pkg/fifo", "", tarfile.FIFOTYPE),), "FIFO"),
    ],
)
def test_tar_links_and_paths_pointing_outside_are_refused(tmp_path, members, links, message):
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(make_tar(members, links))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract(archive, dest)
    assert list(dest.iterdir()) == []


def zip_with_symlink(name: str, target: str) -> bytes:
    """A zip holding one regular file and a symlink entry, marked as Info-ZIP does in external_attr."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("pkg/a.txt", b"alpha")
        link = zipfile.ZipInfo(name)
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        bundle.writestr(link, target)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name,data,message",
    [
        (
            "ok.tar.gz",
            make_tar({"pkg/a.txt": b"alpha"}, (("pkg/same", "a.txt", tarfile.SYMTYPE),)),
            "symlink",
        ),
        (
            "ok.tar.gz",
            make_tar({"pkg/a.txt": b"alpha"}, (("pkg/same", "pkg/a.txt", tarfile.LNKTYPE),)),
            "hardlink",
        ),
        ("ok.zip", zip_with_symlink("pkg/same", "a.txt"), "symlink"),
    ],
)
def test_links_are_refused_even_pointing_inside_the_archive(tmp_path, name, data, message):
    archive = tmp_path / name
    archive.write_bytes(data)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError, match=rf"{name}: member 'pkg/same' is a {message}"):
        safe_extract(archive, dest)
    assert list(dest.iterdir()) == []  # checked before anything is written: not even pkg/a.txt


def symlink_chain_tar(levels_up: int) -> bytes:
    """The CVE-2025-4517 pattern: a symlink chain whose real path exceeds PATH_MAX hides an escape.

    16 links ``a -> ddd…``, ``ddd…/b -> ddd…``, … make ``a/b/…/p`` really 16 long folders deep, too long for
    os.path.realpath to resolve, so the last link ``a/…/p/lll… -> ../../…`` (really: the extraction folder)
    and ``escape -> a/…/p/lll…/..`` (really: ``levels_up`` folders above it) look inside to a lexical check
    and to tarfile's "data" filter before Python 3.11.13. A hardlink through ``escape`` then lets the next
    member overwrite a file outside, and ``escape/planted.txt`` writes a new one.
    """
    component, steps = "d" * 247, "abcdefghijklmnop"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(name: str, kind: bytes, linkname: str = "", data: bytes | None = None) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, linkname, len(data or b"")
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        path = ""
        for step in steps:
            add(os.path.join(path, component), tarfile.DIRTYPE)
            add(os.path.join(path, step), tarfile.SYMTYPE, component)
            path = os.path.join(path, component)
        long_link = os.path.join(*steps, "l" * 254)
        add(long_link, tarfile.SYMTYPE, "../" * len(steps))
        add("escape", tarfile.SYMTYPE, long_link + "/.." * levels_up)
        add("victim_link", tarfile.LNKTYPE, "escape/victim.txt")
        add("victim_link", tarfile.REGTYPE, data=b"overwritten\n")
        add("escape/planted.txt", tarfile.REGTYPE, data=b"planted\n")
    return buffer.getvalue()


def test_symlink_chain_longer_than_path_max_is_refused_and_writes_nothing(server, tmp_path):
    # download_and_extract unpacks into tmp_path/dl/.chain.<random>: two levels up is tmp_path
    archive = symlink_chain_tar(levels_up=2)
    server.files["/chain.tar"] = archive
    victim = tmp_path / "victim.txt"
    victim.write_text("original\n")
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    with pytest.raises(UnsafeArchiveError, match=r"chain\.tar: member 'a' is a symlink"):
        download_and_extract(server.url("/chain.tar"), sha256(archive), tmp_path / "dl")
    assert victim.read_text() == "original\n"
    assert not (tmp_path / "planted.txt").exists()
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    # the verified archive is kept for inspection; nothing else appeared or changed
    assert set(after) - set(before) == {tmp_path / "dl", tmp_path / "dl" / "chain.tar"}
    assert {p: after[p] for p in before} == before


def test_dropped_connection_is_resumed_with_a_range_request(server, tmp_path):
    archive = make_tar(PAYLOAD)
    half = len(archive) // 2
    server.files["/data.tar.gz"] = archive
    server.drop_after = half
    unpacked = download_and_extract(server.url("/data.tar.gz"), sha256(archive), tmp_path / "dl")
    assert all_files(unpacked) == set(PAYLOAD)
    assert server.requests == [("/data.tar.gz", None), ("/data.tar.gz", f"bytes={half}-")]


def test_existing_partial_file_is_continued(server, tmp_path):
    archive = make_zip(PAYLOAD)
    server.files["/data.zip"] = archive
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "data.zip.part").write_bytes(archive[:1000])
    unpacked = download_and_extract(server.url("/data.zip"), sha256(archive), tmp_path / "dl")
    assert all_files(unpacked) == set(PAYLOAD)
    assert server.requests == [("/data.zip", "bytes=1000-")]


def test_server_ignoring_range_restarts_the_file(server, tmp_path):
    archive = make_zip(PAYLOAD)
    server.files["/data.zip"] = archive
    server.honour_range = False
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "data.zip.part").write_bytes(b"stale bytes from another file")
    unpacked = download_and_extract(server.url("/data.zip"), sha256(archive), tmp_path / "dl")
    assert all_files(unpacked) == set(PAYLOAD)


def fsdd_archive() -> bytes:
    top = "free-spoken-digit-dataset-master"
    return make_zip(
        {f"{top}/recordings/{d}_george_0.wav": audio_bytes("WAV") for d in range(3)}
        | {f"{top}/README.md": b"FSDD\n"}
    )


def test_ensure_downloaded_unpacks_the_dataset_folder_onto_root(server, tmp_path):
    archive = fsdd_archive()
    server.files["/master.zip"] = archive
    root = tmp_path / "data" / "fsdd"
    options = {
        "root": str(root),
        "download": True,
        "download_url": server.url("/master.zip"),
        "sha256": sha256(archive),
    }
    ensure_downloaded("fsdd", options)
    assert all_files(root) == {
        "README.md",
        "recordings/0_george_0.wav",
        "recordings/1_george_0.wav",
        "recordings/2_george_0.wav",
    }
    assert sorted(p.name for p in root.parent.iterdir()) == ["fsdd"]  # the staging folder is gone
    ensure_downloaded("fsdd", options)
    assert len(server.requests) == 1  # complete: nothing fetched again
    rows = get_adapter("fsdd").build({"root": str(root)}, tmp_path / "work", 0)
    assert sorted(rows["clip_id"]) == ["0_george_0", "1_george_0", "2_george_0"]


def test_ensure_downloaded_flat_archive_and_checksum_rules(server, tmp_path):
    flat = make_tar({"validation_list.txt": b"", "testing_list.txt": b"", "yes/a_nohash_0.wav": b"x"})
    server.files["/speech_commands_v0.02.tar.gz"] = flat
    root = tmp_path / "sc"
    options = {
        "root": str(root),
        "download": True,
        "download_url": server.url("/speech_commands_v0.02.tar.gz"),
    }
    # the registry's checksum (of the real archive) rejects the local stand-in
    with pytest.raises(ChecksumError):
        ensure_downloaded("speech_commands", options)
    assert not root.exists()
    ensure_downloaded("speech_commands", options | {"sha256": sha256(flat)})
    assert all_files(root) == {"validation_list.txt", "testing_list.txt", "yes/a_nohash_0.wav"}


def test_ensure_downloaded_refusals(server, tmp_path):
    root = tmp_path / "esc50"
    ensure_downloaded("esc50", {"root": str(root)})  # no download option: nothing happens
    assert not root.exists()
    with pytest.raises(ValueError, match="options key 'sha256'"):
        ensure_downloaded("esc50", {"root": str(root), "download": True})
    with pytest.raises(ValueError, match="no registered download"):
        ensure_downloaded("fsd50k", {"root": str(root), "download": True})
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="meta/esc50.csv"):
        ensure_downloaded("esc50", {"root": str(root), "download": True, "sha256": "0" * 64})
    assert server.requests == []
