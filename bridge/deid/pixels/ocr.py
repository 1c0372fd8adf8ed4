"""Tesseract in the process (tesserocr, with Debian's ``tesseract-ocr-eng`` language data).

One engine per thread, loaded on first use and kept: reading a crop costs milliseconds, not a
process start and a model load. The text read never goes to logs: callers count words and
matches only.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bridge.deid.pixels.frames import Box
from bridge.domain.errors import DeidError

_ALNUM = re.compile(r"[A-Za-z0-9]")
#: Where Debian (and most distributions) put the language data.
_TESSDATA = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
)
#: A word counts as read when Tesseract is at least this confident and it has three letters or
#: digits (on anatomy texture Tesseract "reads" short words at confidences up to the sixties).
WORD_CONF = 70.0
WORD_ALNUM = 3
#: Below this confidence, or with fewer than two letters or digits, Tesseract read nothing.
NOTHING_CONF = 50.0

_local = threading.local()


@dataclass(frozen=True)
class Word:
    text: str
    conf: float
    box: Box

    @property
    def alnum(self) -> int:
        return len(_ALNUM.findall(self.text))


def tessdata() -> str | None:
    """The folder holding ``eng.traineddata`` (``TESSDATA_PREFIX`` first)."""
    candidates = [os.environ.get("TESSDATA_PREFIX", ""), *_TESSDATA]
    for folder in candidates:
        if folder and (Path(folder) / "eng.traineddata").is_file():
            return folder
    return None


def tesseract_available() -> bool:
    return importlib.util.find_spec("tesserocr") is not None and tessdata() is not None


def _api() -> Any:
    api = getattr(_local, "api", None)
    if api is None:
        if not tesseract_available():
            raise DeidError("tesseract (tesserocr and eng.traineddata) is not available")
        import tesserocr

        api = tesserocr.PyTessBaseAPI(path=tessdata(), lang="eng")
        _local.api = api
    return api


def _scaled(image: np.ndarray, scale: float) -> Any:
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(image))
    if scale != 1:
        img = img.resize(
            (max(1, int(img.width * scale)), max(1, int(img.height * scale))),
            Image.Resampling.BICUBIC,
        )
    return img


def _words(image: np.ndarray, scale: float, psm: int) -> list[Word]:
    import tesserocr

    api = _api()
    api.SetPageSegMode(psm)
    api.SetImage(_scaled(image, scale))
    try:
        api.Recognize()
    except RuntimeError as exc:
        raise DeidError("tesseract failed", error=type(exc).__name__) from exc
    out: list[Word] = []
    it = api.GetIterator()
    level = tesserocr.RIL.WORD
    while it is not None and not it.Empty(level):
        text = (it.GetUTF8Text(level) or "").strip()
        bbox = it.BoundingBox(level)
        if text and bbox:
            x0, y0, x1, y1 = bbox
            box = (x0 / scale, y0 / scale, x1 / scale, y1 / scale)
            out.append(Word(text=text, conf=float(it.Confidence(level)), box=box))
        if not it.Next(level):
            break
    api.Clear()
    return out


def words(image: np.ndarray, scale: float = 2.0, psm: int = 11) -> list[Word]:
    """Tesseract's words on the whole (8-bit) image (psm 11: sparse text, any layout)."""
    return _words(image, scale, psm)


def count_words(crop: np.ndarray, text_height: int = 32) -> int:
    """Confident words in a crop, read as sparse text at a size Tesseract reads well."""
    return sum(1 for w in _crop_words(crop, text_height) if _confident(w))


def judge(crop: np.ndarray, text_height: int = 32) -> Literal["text", "unsure", "none"]:
    """What Tesseract makes of a crop: "text" (a confident word of three letters or digits),
    "none" (nothing of two letters or digits above 50 % confidence), else "unsure"."""
    found = _crop_words(crop, text_height)
    if any(_confident(w) for w in found):
        return "text"
    if any(w.conf >= NOTHING_CONF and w.alnum >= 2 for w in found):
        return "unsure"
    return "none"


def _confident(w: Word) -> bool:
    return w.conf >= WORD_CONF and w.alnum >= WORD_ALNUM


def _crop_words(crop: np.ndarray, text_height: int) -> list[Word]:
    rows = max(1, crop.shape[0])
    return _words(crop, min(4.0, max(1.0, 3 * text_height / rows)), 11)


def read_regions(image: np.ndarray, boxes: Sequence[Box], text_height: int = 32) -> list[str]:
    """The text Tesseract reads in each box (as one line each)."""
    rows, cols = image.shape[:2]
    texts = []
    for x0, y0, x1, y1 in boxes:
        r0, r1 = max(0, int(y0)), min(rows, int(np.ceil(y1)))
        c0, c1 = max(0, int(x0)), min(cols, int(np.ceil(x1)))
        if r1 <= r0 or c1 <= c0:
            texts.append("")
            continue
        scale = max(1.0, text_height / (r1 - r0))
        found = _words(image[r0:r1, c0:c1], scale, 7)
        texts.append(" ".join(w.text for w in found))
    return texts
