"""Large instances: the header de-identified in memory, the pixel data copied by chunks.

A whole-slide image, a tomosynthesis or a long cine can be hundreds of megabytes to several
gigabytes. When its pixels are not going to be scanned (policy "pass", an operator's release,
or larger than ``deid.pixels.max_bytes`` on a low-risk instance), nothing needs them in
memory: the header is read up to the Pixel Data element, de-identified as usual, written, and
the Pixel Data element is copied from the original file as it is, 1 MiB at a time (native or
encapsulated, in the file's own transfer syntax). Elements after Pixel Data (Data Set Trailing
Padding, Digital Signatures) are not copied: the profile removes them anyway.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.uid import UID

from bridge.domain.errors import DeidError

CHUNK = 1 << 20
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"})
_ITEM = 0xFFFEE000
_SEQ_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF


def read_header(path: Path) -> tuple[Dataset, int | None, int | None]:
    """The dataset up to its pixel data, the offset of the pixel data element and its tag
    (None, None: the instance has none)."""
    from pydicom import dcmread

    with path.open("rb") as fp:
        ds = dcmread(fp, stop_before_pixels=True)
        offset = fp.tell()
        head = fp.read(4)
    if len(head) < 4:
        return ds, None, None
    group, elem = struct.unpack("<HH" if _little_endian(ds) else ">HH", head)
    tag = group << 16 | elem
    if tag not in _PIXEL_TAGS:
        return ds, None, None
    return ds, offset, tag


def _little_endian(ds: Dataset) -> bool:
    ts = UID(str(ds.file_meta.TransferSyntaxUID))
    return bool(ts.is_little_endian)


def _implicit(ds: Dataset) -> bool:
    ts = UID(str(ds.file_meta.TransferSyntaxUID))
    return bool(ts.is_implicit_VR)


def copy_pixel_element(src: Path, offset: int, ds: Dataset, out: BinaryIO) -> int:
    """Copy the Pixel Data element starting at ``offset`` of ``src`` to ``out``; return the
    bytes copied. DeidError if the element is truncated or malformed."""
    e = "<" if _little_endian(ds) else ">"
    copied = 0
    with src.open("rb") as fp:
        fp.seek(offset)
        if _implicit(ds):
            head = _exact(fp, 8)
            (length,) = struct.unpack(f"{e}I", head[4:8])
        else:
            head = _exact(fp, 8)
            vr = head[4:6]
            if vr in _LONG_VRS:
                head += _exact(fp, 4)
                (length,) = struct.unpack(f"{e}I", head[8:12])
            else:
                (length,) = struct.unpack(f"{e}H", head[6:8])
        out.write(head)
        copied += len(head)
        if length != _UNDEFINED:
            return copied + _copy(fp, out, length)
        while True:  # encapsulated: items until the sequence delimiter
            item = _exact(fp, 8)
            tag_g, tag_e, item_len = struct.unpack(f"{e}HHI", item)
            out.write(item)
            copied += 8
            tag = tag_g << 16 | tag_e
            if tag == _SEQ_END:
                return copied
            if tag != _ITEM or item_len == _UNDEFINED:
                raise DeidError("malformed encapsulated pixel data")
            copied += _copy(fp, out, item_len)


def _exact(fp: BinaryIO, n: int) -> bytes:
    data = fp.read(n)
    if len(data) != n:
        raise DeidError("pixel data is truncated")
    return data


def _copy(fp: BinaryIO, out: BinaryIO, n: int) -> int:
    left = n
    while left:
        chunk = fp.read(min(CHUNK, left))
        if not chunk:
            raise DeidError("pixel data is truncated")
        out.write(chunk)
        left -= len(chunk)
    return n
