"""From detector boxes to the regions to mask: merge, check the shape, confirm, pad.

A text detector answers "text-like texture here". Overlay text has a shape: lines of one font
size, much wider than tall, a small share of the image's height. A detector region that has no
such shape (a blob over anatomy far taller than any line found, not elongated) needs a second
opinion: Tesseract reads it. A confident word masks it; nothing legible at all leaves it alone
(counted), so that a texture of lung or bowel does not black out the anatomy the reader is asked
about; anything in between (or no OCR to ask) is *unsure*: masked, or the instance held, as the
policy says (``deid.pixels.unsure``).

Every region kept is grown by a margin: a fraction of its height on each side plus a fixed
pixel, because detectors draw boxes at the glyphs' body and a line's accents, descenders, the
anti-aliased edge and a lone letter after a gap ("Sex: M") fall just outside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from bridge.deid.pixels.frames import Box

#: A line is taller than this share of the frame's height only in a title-sized font.
TALL_SHARE = 0.08
#: ...or taller than this many times the height of the frame's line-shaped regions (their
#: lower quartile).
TALL_LINES = 3.0
#: A region at least this many times as wide as tall is line-shaped whatever its height.
LINE_ASPECT = 4.0

#: How far (in line heights) a line is extended over ink beyond its ends.
REACH = 1.5

#: Reads a crop: "text" (confident words), "none" (nothing legible), "unsure" (in between).
Reader = Callable[[np.ndarray], Literal["text", "unsure", "none"]]


@dataclass(frozen=True)
class Regions:
    boxes: list[Box]
    #: Regions with text-like texture but no text shape, that OCR read nothing in (not masked).
    rejected: int = 0
    #: Such regions in which OCR read words (masked).
    confirmed: int = 0
    #: Such regions OCR could not decide on (half-legible "words"), or that no OCR could read:
    #: masked too (in ``boxes``); the policy may hold the instance instead.
    unsure: int = 0


def merge_overlapping(boxes: list[Box]) -> list[Box]:
    """One box per text region: boxes overlapping by half of the smaller one are joined (the two
    detector passes and the block completion find the same line more than once)."""
    out: list[list[float]] = []
    for b in sorted(boxes, key=lambda b: (b[1], b[0])):
        for o in out:
            iw = min(o[2], b[2]) - max(o[0], b[0])
            ih = min(o[3], b[3]) - max(o[1], b[1])
            smaller = min((o[2] - o[0]) * (o[3] - o[1]), (b[2] - b[0]) * (b[3] - b[1]))
            if iw > 0 and ih > 0 and iw * ih >= 0.5 * smaller:
                o[:] = [min(o[0], b[0]), min(o[1], b[1]), max(o[2], b[2]), max(o[3], b[3])]
                break
        else:
            out.append(list(b))
    return [(o[0], o[1], o[2], o[3]) for o in out]


def unsure(boxes: list[Box], rows: int) -> list[bool]:
    """For each box: True when it is not shaped like a line of text (see the module doc)."""
    heights = [b[3] - b[1] for b in boxes]
    lines = [h for b, h in zip(boxes, heights, strict=True) if b[2] - b[0] >= 2.5 * max(h, 1.0)]
    # the lower quartile: anatomy mistaken for text comes in every size, overlay text in one
    typical = float(np.percentile(lines, 25)) if lines else None
    out = []
    for b, h in zip(boxes, heights, strict=True):
        w = b[2] - b[0]
        tall = h > TALL_SHARE * rows or (typical is not None and h > TALL_LINES * typical)
        out.append(bool(tall and w < LINE_ASPECT * h and h > 12))
    return out


#: A pixel is ink when it is farther than this from its region's median (8-bit view).
INK = 64


def polarity(pixels: np.ndarray, median: int) -> int:
    """+1 when a text region's ink is brighter than its background (white on dark), -1 when
    darker, 0 when it cannot tell: the side with at least twice as many pixels standing out."""
    bright = int(np.count_nonzero(pixels > median + INK))
    dark = int(np.count_nonzero(pixels < median - INK))
    if bright >= 2 * dark and bright:
        return 1
    if dark >= 2 * bright and dark:
        return -1
    return 0


def row_polarity(pixels: np.ndarray, median: int) -> int:
    """:func:`polarity` of a box holding one or more lines: the glyphs' ink gathers in the middle
    rows of a line, anatomy standing out is spread over all of them. The side whose ink the
    middle half of the rows holds twice as much more of than the outer rows decides; where
    neither does, :func:`polarity`."""
    n = pixels.shape[0]
    if n >= 4:
        middle = np.zeros(n, bool)
        middle[n // 4 : n - n // 4] = True
        excess = []
        for side in (pixels > median + INK, pixels < median - INK):
            per_row = side.sum(axis=1)
            excess.append(float(per_row[middle].mean() - per_row[~middle].mean()))
        b, d = excess
        if b > 0 and b >= 2 * max(d, 0.0):
            return 1
        if d > 0 and d >= 2 * max(b, 0.0):
            return -1
    return polarity(pixels, median)


def ink(pixels: np.ndarray, median: int, sign: int) -> np.ndarray:
    """Pixels standing out from ``median`` the way a region's glyphs do (``sign``; 0: either
    way): white text over dark anatomy is not continued into the dark anatomy beside it."""
    if sign > 0:
        return np.asarray(pixels > median + INK)
    if sign < 0:
        return np.asarray(pixels < median - INK)
    return np.asarray(np.abs(pixels - median) > INK)


def tighten(box: Box, image: np.ndarray) -> Box:
    """``box`` shrunk to the rows and columns holding ink (pixels farther than a quarter of the
    range from its median): OCR's word boxes on a noisy image reach well beyond the glyphs. A box
    without ink is kept whole."""
    rows, cols = image.shape[:2]
    c0, c1 = max(0, int(box[0])), min(cols, int(np.ceil(box[2])))
    r0, r1 = max(0, int(box[1])), min(rows, int(np.ceil(box[3])))
    if c1 <= c0 or r1 <= r0:
        return box
    crop = image[r0:r1, c0:c1].astype(np.int16)
    ink = np.abs(crop - int(np.median(crop))) > INK
    if not ink.any():
        return box
    ys = np.nonzero(ink.any(axis=1))[0]
    xs = np.nonzero(ink.any(axis=0))[0]
    return (float(c0 + xs[0]), float(r0 + ys[0]), float(c0 + xs[-1] + 1), float(r0 + ys[-1] + 1))


def extend(box: Box, image: np.ndarray, reach: float = REACH) -> Box:
    """A line-shaped ``box`` extended over ink within ``reach`` heights of either end, on the
    line's own rows: a word or a lone letter after a wider gap ("Sex: M") that the detector
    left out. Ink: pixels farther than a quarter of the range from the line's median, on the
    side the line's own glyphs are (:func:`ink`), reaching over at least half the line's
    height (a letter does; the edge of a table or a bone crossing the line does not)."""
    rows, cols = image.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1 = max(0, x0), min(cols, x1)
    y0, y1 = max(0, y0), min(rows, y1)
    h = y1 - y0
    if h < 2 or x1 <= x0:
        return box
    band = image[y0:y1].astype(np.int16)
    median = int(np.median(band[:, x0:x1]))
    inky = ink(band, median, polarity(band[:, x0:x1], median))
    span = int(np.ceil(reach * h))
    nx0, nx1 = x0, x1
    for lo, hi in ((max(0, x0 - span), x0), (x1, min(cols, x1 + span))):
        window = inky[:, lo:hi]
        if window.any(axis=1).sum() * 2 < h:
            continue
        found = np.nonzero(window.any(axis=0))[0]
        if lo < x0:
            nx0 = lo + int(found[0])
        else:
            nx1 = lo + int(found[-1]) + 1
    return (min(box[0], float(nx0)), box[1], max(box[2], float(nx1)), box[3])


def fit_lines(box: Box, image: np.ndarray) -> list[Box]:
    """A line region brought to its ink: one box per run of rows holding the glyphs' ink (two
    lines of text found as one region become two; ink of the glyphs' side only, see
    :func:`row_polarity`, so that dark anatomy above white text does not stretch the line),
    each with its columns brought to its ink plus one line height on either side (a faint
    letter at a line's end stays inside). The detector's box reaches a good part of a line
    height above and below the glyphs, and a two-line region leaves the short line's empty
    end inside. A region without ink is kept whole."""
    rows, cols = image.shape[:2]
    c0, c1 = max(0, int(box[0])), min(cols, int(np.ceil(box[2])))
    r0, r1 = max(0, int(box[1])), min(rows, int(np.ceil(box[3])))
    if c1 <= c0 or r1 <= r0:
        return [box]
    crop = image[r0:r1, c0:c1].astype(np.int16)
    median = int(np.median(crop))
    inky = np.abs(crop - median) > INK
    inked = ink(crop, median, row_polarity(crop, median)).any(axis=1)
    if not inked.any():
        return [box]
    runs: list[tuple[int, int]] = []
    for y in np.nonzero(inked)[0]:
        if runs and y - runs[-1][1] <= 2:  # a gap of one or two rows is within a line
            runs[-1] = (runs[-1][0], int(y))
        else:
            runs.append((int(y), int(y)))
    out: list[Box] = []
    for a, b in runs:
        if b - a < 2:
            continue  # a stray row of noise
        xs = np.nonzero(inky[a : b + 1].any(axis=0))[0]
        h = b + 1 - a
        out.append(
            (
                max(box[0], float(c0 + xs[0] - h)),
                float(r0 + a),
                min(box[2], float(c0 + xs[-1] + 1 + h)),
                float(r0 + b + 1),
            )
        )
    return out or [box]


def grow(box: Box, share: float, shape: tuple[int, int]) -> Box:
    """``box`` grown by ``share`` of its height on every side and one more pixel above and below
    (ascenders, descenders, anti-aliased edges), inside the frame."""
    rows, cols = shape
    x0, y0, x1, y1 = box
    m = share * (y1 - y0)
    return (
        max(0.0, x0 - m),
        max(0.0, y0 - m - 1),
        min(float(cols), x1 + m),
        min(float(rows), y1 + m + 1),
    )


def settle(boxes: list[Box], image: np.ndarray, pad: float, read: Reader | None) -> Regions:
    """The regions to mask on ``image`` (8-bit view) from the detector's ``boxes``.

    Lines and unsure regions are merged apart, so that a blob never swallows a line found inside
    it (rejecting the blob then keeps the line)."""
    rows, cols = image.shape[:2]
    doubts = unsure(boxes, rows)
    lines = merge_overlapping([b for b, d in zip(boxes, doubts, strict=True) if not d])
    blobs = merge_overlapping([b for b, d in zip(boxes, doubts, strict=True) if d])
    keep = [
        grow(fit, pad, (rows, cols)) for b in lines for fit in fit_lines(extend(b, image), image)
    ]
    counts = {"text": 0, "unsure": 0, "none": 0}
    for box in blobs:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        crop = image[max(0, y0) : min(rows, y1), max(0, x0) : min(cols, x1)]
        verdict = read(crop) if read is not None and crop.size else "unsure"
        counts[verdict] += 1
        if verdict != "none":
            keep.append(grow(box, pad, (rows, cols)))
    return Regions(keep, rejected=counts["none"], confirmed=counts["text"], unsure=counts["unsure"])
