"""Fast reader for plain PCM / IEEE-float WAV files, bit-identical to ``soundfile.read(dtype="float32")``.

libsndfile costs ~50-150 us per file of fixed overhead (open, format probing, its own buffering), which
dominates for short clips. Most datasets ship plain little-endian RIFF/WAVE: :func:`read` parses those with
``struct`` from one read of the file's head (which also holds all samples of a short clip) and scales the
samples exactly as libsndfile does (integers times a power of two, so the float32 results are equal bit for
bit). Anything else (RF64, big-endian RIFX, compressed codecs, padded samples, truncated or streamed data
chunks) gives ``None``, and the caller falls back to soundfile.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

PCM, IEEE_FLOAT, EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
# The GUID tail shared by the KSDATAFORMAT_SUBTYPE_* of PCM and IEEE float (after the 2-byte format tag).
SUBTYPE_TAIL = bytes.fromhex("000000001000800000aa00389b71")
CANONICAL = struct.Struct("<4sI4s4sIHHIIHH4sI")  # RIFF, WAVE, a 16-byte 'fmt ', the 'data' chunk header
HEAD_BYTES = 1 << 16  # first read: the header, and all samples of a clip up to ~2 s at 16 kHz


def _unsigned8(raw: np.ndarray) -> np.ndarray:
    """8-bit WAV samples are unsigned, offset by 128."""
    return raw.astype(np.int16) - 128


def _int24(raw: np.ndarray) -> np.ndarray:
    """Little-endian 3-byte samples as int32 (exact in float32: 24 bits fit the mantissa)."""
    b = raw.reshape(-1, 3).astype(np.int32)
    return (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8  # sign-extend 24 -> 32 bits


# (format tag, bits per sample) -> (stored dtype, libsndfile's float normalisation 1 / 2^(bits - 1) for
# integers, and how to widen stored values numpy cannot scale directly).
FORMATS: dict[tuple[int, int], tuple[np.dtype, np.float32, Callable[[np.ndarray], np.ndarray] | None]] = {
    (PCM, 8): (np.dtype("u1"), np.float32(2.0**-7), _unsigned8),
    (PCM, 16): (np.dtype("<i2"), np.float32(2.0**-15), None),
    (PCM, 24): (np.dtype("u1"), np.float32(2.0**-23), _int24),
    (PCM, 32): (np.dtype("<i4"), np.float32(2.0**-31), None),
    (IEEE_FLOAT, 32): (np.dtype("<f4"), np.float32(1.0), None),
    (IEEE_FLOAT, 64): (np.dtype("<f8"), np.float32(1.0), None),
}


class Header(NamedTuple):
    """Where and how the samples are stored."""

    frames: int
    samplerate: int
    channels: int
    format: tuple[int, int]  # key of FORMATS
    offset: int  # byte offset of the first sample
    nbytes: int  # bytes of sample data


class Clip(NamedTuple):
    """A parsed WAV file and the bytes holding its samples (from ``data[offset]`` on), not yet decoded."""

    header: Header
    data: bytes
    offset: int


def read(path: str | os.PathLike) -> tuple[np.ndarray, int] | None:
    """([frames, channels] float32, rate) equal to ``soundfile.read(path, dtype="float32", always_2d=True)``.

    None if the file is not a WAV this module reads exactly (the caller then uses soundfile).
    """
    clip = load(path)
    return None if clip is None else (decode(clip), clip.header.samplerate)


def load(path: str | os.PathLike) -> Clip | None:
    """Open the file once: its header and sample bytes, or None if :func:`read` would return None."""
    fd = os.open(path, os.O_RDONLY)
    try:
        head = os.pread(fd, HEAD_BYTES, 0)
        size = len(head) if len(head) < HEAD_BYTES else os.fstat(fd).st_size  # a short read is EOF
        header = parse(fd, head, size)
        if header is None:
            return None
        if header.offset + header.nbytes <= len(head):
            clip = Clip(header, head, header.offset)  # the samples came with the first read
        else:
            clip = Clip(header, os.pread(fd, header.nbytes, header.offset), 0)
    finally:
        os.close(fd)
    if len(clip.data) < clip.offset + header.nbytes:
        raise OSError(f"{path}: file shrank while reading")
    return clip


def parse(fd: int, head: bytes, size: int) -> Header | None:
    """Walk the RIFF chunks up to 'data'; chunks beyond ``head`` (e.g. a long LIST) are read from ``fd``."""
    if len(head) >= 44:  # the canonical 44-byte header ('fmt ' of 16 bytes, then 'data'): one unpack
        riff, _, wave, fmt_id, fmt_size, *fmt, data_id, length = CANONICAL.unpack_from(head)
        if (riff, wave, fmt_id, fmt_size, data_id) == (b"RIFF", b"WAVE", b"fmt ", 16, b"data"):
            tag, channels, rate, _, align, bits = fmt
            return _data_header((tag, channels, rate, align, bits), 44, length, size)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    fmt, pos = None, 12
    while pos + 8 <= size:
        chunk, length = struct.unpack("<4sI", _bytes(fd, head, pos, 8))
        if chunk == b"fmt ":
            fmt = _parse_fmt(_bytes(fd, head, pos + 8, min(length, 40)))
            if fmt is None:
                return None
        elif chunk == b"data":
            return _data_header(fmt, pos + 8, length, size)
        pos += 8 + length + (length & 1)  # chunks are padded to an even size
    return None


def _bytes(fd: int, head: bytes, pos: int, n: int) -> bytes:
    """``n`` bytes at ``pos``, from ``head`` when it holds them."""
    return head[pos : pos + n] if pos + n <= len(head) else os.pread(fd, n, pos)


def _parse_fmt(body: bytes) -> tuple[int, int, int, int, int] | None:
    """(format tag, channels, rate, block align, bits) of a 'fmt ' chunk, the extensible subformat resolved."""
    if len(body) < 16:
        return None
    tag, channels, rate, _, align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == EXTENSIBLE:
        if len(body) < 40:
            return None
        valid_bits, _, guid = struct.unpack_from("<HI16s", body, 18)
        if guid[2:] != SUBTYPE_TAIL or valid_bits not in (0, bits):
            return None  # a non-PCM/float subtype, or padded samples (e.g. 20 valid bits in 24)
        tag = struct.unpack_from("<H", guid)[0]
    return tag, channels, rate, align, bits


def _data_header(fmt, offset: int, length: int, size: int) -> Header | None:
    """The header of a supported 'data' chunk lying wholly in the file, else None."""
    if fmt is None:
        return None
    tag, channels, rate, align, bits = fmt
    if (tag, bits) not in FORMATS or channels < 1 or rate < 1 or align != channels * bits // 8:
        return None
    if length % align or offset + length > size:
        return None  # truncated or streamed (size 0 / 0xFFFFFFFF): libsndfile has its own rules
    return Header(length // align, rate, channels, (tag, bits), offset, length)


def decode(clip: Clip, out: np.ndarray | None = None) -> np.ndarray:
    """[frames, channels] float32 samples, scaled as libsndfile does; written into ``out`` if given."""
    header = clip.header
    dtype, scale, widen = FORMATS[header.format]
    raw = np.frombuffer(clip.data, dtype, header.nbytes // dtype.itemsize, clip.offset)
    if widen is not None:
        raw = widen(raw)
    out = np.empty(len(raw), dtype=np.float32) if out is None else out.reshape(-1)
    # float32 products with a power of two: exact, as libsndfile's (float) sample * normfact
    np.multiply(raw, scale, out=out, dtype=np.float32)
    return out.reshape(header.frames, header.channels)
