"""Tesseract, driven as a program (Debian's ``tesseract-ocr``): words with boxes and confidences.

One process per call; regions are read in one call by giving Tesseract a list of crops (each a
page), so the model loads once. The text read never goes to logs: callers only count matches.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.deid.pixels.frames import Box
from bridge.errors import DeidError

TIMEOUT = 120.0
_ALNUM = re.compile(r"[A-Za-z0-9]")


@dataclass(frozen=True)
class Word:
    text: str
    conf: float
    box: Box
    page: int = 0

    @property
    def alnum(self) -> int:
        return len(_ALNUM.findall(self.text))


def tesseract_available() -> bool:
    return shutil.which("tesseract") is not None


def _run(args: list[str], stdin: bytes | None = None) -> str:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_THREAD_LIMIT": "1"}
    try:
        proc = subprocess.run(  # noqa: S603 - fixed program, arguments built here
            ["tesseract", *args],
            input=stdin,
            capture_output=True,
            timeout=TIMEOUT,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DeidError("tesseract could not run", error=type(exc).__name__) from exc
    if proc.returncode != 0:
        raise DeidError("tesseract failed", status=proc.returncode)
    return proc.stdout.decode("utf-8", "replace")


def _parse(tsv: str, scales: Sequence[tuple[float, float, float]]) -> list[Word]:
    out = []
    for line in tsv.splitlines()[1:]:
        p = line.split("\t")
        if len(p) < 12 or p[0] != "5" or not p[11].strip():
            continue
        page = int(p[1]) - 1
        x, y, w, h = (int(v) for v in p[6:10])
        ox, oy, s = scales[page] if page < len(scales) else (0.0, 0.0, 1.0)
        box = (ox + x / s, oy + y / s, ox + (x + w) / s, oy + (y + h) / s)
        out.append(Word(text=p[11].strip(), conf=float(p[10]), box=box, page=page))
    return out


def _png(image: np.ndarray, scale: float) -> bytes:
    from PIL import Image

    img = Image.fromarray(image)
    if scale != 1:
        img = img.resize(
            (max(1, int(img.width * scale)), max(1, int(img.height * scale))),
            Image.Resampling.BICUBIC,
        )
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def words(image: np.ndarray, scale: float = 2.0, psm: int = 11) -> list[Word]:
    """Tesseract's words on the whole (8-bit) image."""
    tsv = _run(["stdin", "stdout", "--psm", str(psm), "tsv"], stdin=_png(image, scale))
    return _parse(tsv, [(0.0, 0.0, scale)])


def read_regions(image: np.ndarray, boxes: Sequence[Box], text_height: int = 32) -> list[str]:
    """The text Tesseract reads in each box (one line each), in one Tesseract run."""
    if not boxes:
        return []
    rows, cols = image.shape
    with tempfile.TemporaryDirectory(prefix="bridge-ocr-") as tmp:
        listing = []
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            r0, r1 = max(0, int(y0)), min(rows, int(np.ceil(y1)))
            c0, c1 = max(0, int(x0)), min(cols, int(np.ceil(x1)))
            crop = image[r0:r1, c0:c1] if r1 > r0 and c1 > c0 else np.full((8, 8), 255, np.uint8)
            path = Path(tmp) / f"{i}.png"
            path.write_bytes(_png(crop, max(1.0, text_height / max(1, r1 - r0))))
            listing.append(str(path))
        lst = Path(tmp) / "pages.txt"
        lst.write_text("\n".join(listing) + "\n")
        tsv = _run([str(lst), "stdout", "--psm", "7", "tsv"])
    texts = [""] * len(boxes)
    for w in _parse(tsv, [(0.0, 0.0, 1.0)] * len(boxes)):
        if 0 <= w.page < len(texts):
            texts[w.page] = (texts[w.page] + " " + w.text).strip()
    return texts
