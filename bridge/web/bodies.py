"""Request bodies too large for memory (STOW-RS, ZIP uploads) go to a spool file by chunks,
with a size limit checked as they come."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import HTTPException


async def save_body(
    chunks: AsyncIterator[bytes], dest: Path, limit: int, too_large: HTTPException
) -> int:
    """Write ``chunks`` to ``dest``; raise ``too_large`` once past ``limit`` bytes."""
    size = 0
    with dest.open("wb") as fh:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise too_large
            fh.write(chunk)
    return size


async def file_chunks(file: Any, size: int = 1 << 20) -> AsyncIterator[bytes]:
    """The chunks of an uploaded form file (an UploadFile)."""
    while chunk := await file.read(size):
        yield chunk
