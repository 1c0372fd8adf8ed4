"""Streaming reader of ``multipart/related`` bodies (WADO-RS): each part goes to a file as it
arrives, so a study of any size passes through in a bounded amount of memory."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from bridge.domain.errors import PacsUnavailableError

_CHUNK = 1 << 20


def boundary_of(content_type: str) -> bytes:
    m = re.search(r'boundary="?([^";,]+)"?', content_type, flags=re.I)
    if not m:
        raise PacsUnavailableError("the PACS answered a multipart body without a boundary")
    return m.group(1).strip().encode()


def split_parts(
    chunks: Iterable[bytes], boundary: bytes, new_file: Iterator[Path], sender: str = "the PACS"
) -> Iterator[Path]:
    """Write each part's body to the next path from ``new_file``; yield it once complete.

    A body that ends before its closing delimiter raises PacsUnavailableError naming
    ``sender`` (the part being written is deleted; the parts already yielded are whole).
    """
    delim = b"\r\n--" + boundary
    buf = bytearray(b"\r\n")  # the first delimiter has no leading CRLF: add one
    state = "preamble"
    out: BinaryIO | None = None
    path: Path | None = None
    keep = len(delim) + 4
    try:
        for chunk in chunks:
            buf += chunk
            while True:
                if state == "preamble":
                    i = buf.find(delim)
                    if i < 0:
                        del buf[: max(0, len(buf) - keep)]
                        break
                    del buf[: i + len(delim)]
                    state = "after-delim"
                if state == "after-delim":
                    if len(buf) < 2:
                        break
                    if buf[:2] == b"--":
                        return  # closing delimiter
                    j = buf.find(b"\r\n\r\n")
                    if j < 0:
                        if len(buf) > 64 * 1024:
                            raise PacsUnavailableError("malformed multipart part headers")
                        break
                    del buf[: j + 4]
                    path = next(new_file)
                    out = path.open("wb")
                    state = "body"
                if state == "body" and out is not None and path is not None:
                    i = buf.find(delim)
                    if i < 0:
                        if len(buf) > keep:
                            out.write(buf[: len(buf) - keep])
                            del buf[: len(buf) - keep]
                        break
                    out.write(buf[:i])
                    out.close()
                    out = None
                    del buf[: i + len(delim)]
                    state = "after-delim"
                    done, path = path, None
                    yield done
        raise PacsUnavailableError(f"{sender} closed the multipart body early")
    finally:
        if out is not None:
            out.close()
        if path is not None:
            path.unlink(missing_ok=True)


def chunks_of(raw: BinaryIO | Iterable[bytes]) -> Iterator[bytes]:
    if hasattr(raw, "read"):
        while True:
            b = raw.read(_CHUNK)
            if not b:
                return
            yield b
    else:
        yield from raw
