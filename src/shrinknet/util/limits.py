"""How much one input file may make shrinknet hold in memory: one rule for data files and model files.

A file's headers declare its arrays' shapes; they are checked here before any data is read:

- the data, as the float32 copy shrinknet keeps, may not exceed ``SHRINKNET_MAX_DATA_BYTES`` (an
  environment variable: bytes, or a size such as ``8GiB``; default ``DEFAULT_MAX_DATA_BYTES``, 2 GiB,
  far beyond the microcontroller-sized networks and data sets shrinknet is for);
- a compressed member (gzip, a deflated zip entry) may not declare more than ``MAX_EXPANSION`` times
  its compressed bytes (plus 1 MiB): real data compresses 2-20x, a small file of deflated zeros
  declaring gigabytes is refused unread. A stream whose size is not declared up front is read
  through :class:`CappedReader`, which stops at the same bound.
"""

from __future__ import annotations

import os
import re

from ..errors import InputError

ENV = "SHRINKNET_MAX_DATA_BYTES"
DEFAULT_MAX_DATA_BYTES = 2 * 2**30
MAX_EXPANSION = 200
SLACK = 2**20  # compressed headers and tiny files: a few KB may always expand to 1 MiB
CHUNK = 16 * 2**20  # bytes read (and converted) at a time


def max_data_bytes() -> int:
    """The limit in force (``SHRINKNET_MAX_DATA_BYTES``, else the default)."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return DEFAULT_MAX_DATA_BYTES
    m = re.fullmatch(r"(\d+)\s*([KMG]i?B)?", text, re.IGNORECASE)
    if not m or int(m[1]) == 0:
        raise InputError(f"{ENV}={text!r} is not a size: give bytes or a size such as 512MiB or 8GiB")
    unit = (m[2] or "B").upper()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}[unit]
    return int(m[1]) * scale


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def check(name: str, what: str, keep_bytes: int, stored_bytes: int | None = None,
          compressed_bytes: int | None = None) -> None:
    """Refuse (InputError, one line) an array before it is read.

    keep_bytes: what shrinknet will hold (float32 values x 4); stored_bytes: what the file declares for
    it (uncompressed); compressed_bytes: what the file really holds of it when it is compressed.
    """
    limit = max_data_bytes()
    if keep_bytes > limit:
        raise InputError(f"{name}: {what} would need {_size(keep_bytes)} in memory, more than the {_size(limit)} "
                         f"{ENV} allows: set {ENV} higher (e.g. {ENV}=8GiB) if the file is genuine")
    if compressed_bytes is not None and stored_bytes is not None and \
            stored_bytes > MAX_EXPANSION * compressed_bytes + SLACK:
        raise InputError(f"{name}: {what}: {_size(stored_bytes)} declared in {_size(compressed_bytes)} compressed "
                         f"(more than {MAX_EXPANSION}x): refusing a decompression bomb")


class CappedReader:
    """A binary stream (e.g. a gzip file) that refuses, with InputError, to yield more than ``cap`` bytes."""

    def __init__(self, f, cap: int, name: str):
        self.f, self.cap, self.name, self.read_bytes = f, cap, name, 0

    def read(self, n: int = -1) -> bytes:
        n = self.cap + 1 - self.read_bytes if n is None or n < 0 else min(n, self.cap + 1 - self.read_bytes)
        data = self.f.read(max(n, 0))
        self.read_bytes += len(data)
        if self.read_bytes > self.cap:
            raise InputError(f"{self.name} expands to more than {_size(self.cap)}: more than {MAX_EXPANSION}x its "
                             f"compressed size or the {ENV} limit; refusing a decompression bomb")
        return data
