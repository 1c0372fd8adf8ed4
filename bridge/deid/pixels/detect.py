"""Where is the text? Detectors return boxes (x0, y0, x1, y1) on an 8-bit frame.

``db``: the PP-OCRv4 text detector (a Differentiable Binarization network, Apache-2.0, its ONNX
file shipped in ``models/`` with its NOTICE), run with onnxruntime on the CPU, loaded once per
process. It finds text lines of
any polarity on textured backgrounds, where Tesseract's own layout analysis finds about half
(measured on the shared pseudo-PHI corpus: see docs/deid-pixels.md).

``tesseract``: Tesseract's sparse-text layout analysis; words above a confidence.

Both results go through :func:`complete_blocks`: overlay text comes in left-aligned blocks of
evenly spaced lines (the "Name: / ID: / DOB:" stack of a modality's annotation), and a line of
such a block that the detector missed (white text over white anatomy, say) is masked too.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bridge.deid.pixels.frames import Box
from bridge.domain.errors import DeidError

#: The detector model, shipped with the bridge (Apache-2.0; see models/NOTICE).
MODEL = Path(__file__).resolve().parent / "models" / "ch_PP-OCRv4_det_infer.onnx"


class TextDetector(Protocol):
    name: str

    def available(self) -> bool: ...

    def detect(self, image: np.ndarray) -> list[Box]: ...


def default_model_path() -> Path | None:
    """The packaged detector model (None if the file was removed from the installation)."""
    return MODEL if MODEL.is_file() else None


_SESSIONS: dict[tuple[str, int], Any] = {}
_SESSIONS_LOCK = threading.Lock()


def _session(model_path: str, threads: int) -> Any:
    """One onnxruntime session per model file and thread setting in the process, shared by the
    pre-filter, the detector and its second look (a session runs concurrent calls safely)."""
    with _SESSIONS_LOCK:
        session = _SESSIONS.get((model_path, threads))
        if session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            session = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
            _SESSIONS[(model_path, threads)] = session
        return session


class DbDetector:
    """PP-OCRv4 DB text detection with onnxruntime; post-processing as in the paper: threshold
    the probability map, keep components whose mean probability passes ``box_thresh``, grow
    each by area * unclip / perimeter."""

    name = "db"

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        min_side: int = 736,
        max_side: int = 2000,
        thresh: float = 0.3,
        box_thresh: float = 0.5,
        unclip: float = 1.0,
        threads: int = 1,
        shrink: bool = False,
    ) -> None:
        self.model_path = model_path or default_model_path()
        self.min_side = min_side
        self.max_side = max_side
        self.thresh = thresh
        self.box_thresh = box_thresh
        self.unclip = unclip
        self.threads = threads
        #: Scale the shorter side to ``min_side`` even when that shrinks the frame (at most by
        #: half, so small overlay text keeps enough pixels): the pre-filter's cheap look.
        self.shrink = shrink
        self._session: Any = None

    def available(self) -> bool:
        if self.model_path is None or not Path(self.model_path).is_file():
            return False
        return importlib.util.find_spec("onnxruntime") is not None

    def _load(self) -> Any:
        if self._session is None:
            if not self.available():
                raise DeidError("text detector model or onnxruntime missing")
            self._session = _session(str(self.model_path), self.threads)
        return self._session

    def detect(self, image: np.ndarray) -> list[Box]:
        from PIL import Image
        from scipy import ndimage

        session = self._load()
        rows, cols = image.shape
        scale = self.min_side / max(1, min(rows, cols))
        scale = max(0.5, scale) if self.shrink else max(1.0, scale)
        if max(rows, cols) * scale > self.max_side:
            scale = self.max_side / max(rows, cols)
        nh = max(32, int(round(rows * scale / 32)) * 32)
        nw = max(32, int(round(cols * scale / 32)) * 32)
        resized = Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR)
        x = (np.asarray(resized, np.float32) / 127.5 - 1.0)[None, None].repeat(3, axis=1)
        prob = session.run(None, {session.get_inputs()[0].name: x})[0][0, 0]
        mask = ndimage.binary_dilation(prob > self.thresh, structure=np.ones((2, 2)))
        labels, _ = ndimage.label(mask)
        sy, sx = rows / nh, cols / nw
        boxes: list[Box] = []
        for i, sl in enumerate(ndimage.find_objects(labels)):
            if sl is None:
                continue
            comp = labels[sl] == i + 1
            h = sl[0].stop - sl[0].start
            w = sl[1].stop - sl[1].start
            if min(h, w) < 3 or float(prob[sl][comp].mean()) < self.box_thresh:
                continue
            d = comp.sum() * self.unclip / (2 * (h + w))
            boxes.append(
                (
                    max(0.0, (sl[1].start - d) * sx),
                    max(0.0, (sl[0].start - d) * sy),
                    min(float(cols), (sl[1].stop + d) * sx),
                    min(float(rows), (sl[0].stop + d) * sy),
                )
            )
        return boxes


class TesseractDetector:
    """Tesseract's sparse-text layout analysis: word boxes above ``min_conf``."""

    name = "tesseract"

    def __init__(self, min_conf: float = 60.0) -> None:
        self.min_conf = min_conf

    def available(self) -> bool:
        from bridge.deid.pixels.ocr import tesseract_available

        return tesseract_available()

    def detect(self, image: np.ndarray) -> list[Box]:
        from bridge.deid.pixels.ocr import words

        return [w.box for w in words(image, scale=2) if w.conf >= self.min_conf and w.alnum >= 2]


def _edge_density(edges: np.ndarray | None, box: Box) -> float:
    if edges is None:
        return 0.0
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    region = edges[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)]
    return float(region.mean()) if region.size else 0.0


def complete_blocks(
    boxes: list[Box], rows: int, image: np.ndarray | None = None, align: float = 4.0
) -> list[Box]:
    """Complete left-aligned, evenly spaced text blocks (the "Name: / ID: / DOB:" stack).

    - a line missing between two lines of the block is added;
    - a box inside the block's span that starts to the right of the block's left edge (its first
      words were not seen, e.g. white text over white anatomy) is extended to that edge, where
      the image shows at least a third of the block's edge density between the two (the
      continuation lines of an indented value are not);
    - with ``image``, one line above and one below the block are added where the image shows at
      least a third of the block's edge density there (a faint first or last line), or a tenth
      for a line cut by the image's edge (two rows of it may be all that is left), and half as
      much again as the whole frame's (on a noisy image every slot has edges).
    """
    if len(boxes) < 2:
        return list(boxes)  # a block needs two lines; skip the edge map on text-free frames
    edges = None
    background = 0.0
    if image is not None:
        from scipy import ndimage

        f = image.astype(np.float32)
        edges = np.hypot(ndimage.sobel(f, 0), ndimage.sobel(f, 1)) > 160
        background = float(edges.mean())
    out = [list(b) for b in sorted(boxes, key=lambda b: b[1])]
    taken: set[int] = set()
    added: list[Box] = []
    for i, first in enumerate(out):
        if i in taken:
            continue
        block = [first]
        taken.add(i)
        h0 = first[3] - first[1]
        for j in range(i + 1, len(out)):
            b = out[j]
            if j in taken or abs(b[0] - first[0]) > align:
                continue
            if 0.6 <= (b[3] - b[1]) / max(h0, 1.0) <= 1.6:
                block.append(b)
                taken.add(j)
        if len(block) < 2:
            continue
        height = float(np.median([b[3] - b[1] for b in block]))
        steps = np.diff([b[1] for b in block])
        steps = steps[steps > 0.8 * height]
        if not len(steps):
            continue
        pitch = float(steps.min())
        if pitch > 3 * height:
            continue
        width = float(np.median([b[2] - b[0] for b in block]))
        x0 = min(b[0] for b in block)
        for upper, lower in zip(block, block[1:], strict=False):
            gap = lower[1] - upper[1]
            k = int(round(gap / pitch))
            if 2 <= k <= 4 and abs(gap - k * pitch) <= 0.3 * pitch:
                for s in range(1, k):
                    y = upper[1] + s * pitch
                    added.append((x0, y, x0 + width, min(float(rows), y + height)))
        ref = float(np.median([_edge_density(edges, tuple(b)) for b in block]))  # type: ignore[arg-type]
        top, bottom = block[0][1] - 1.2 * pitch, block[-1][3] + 1.2 * pitch
        for b in out:
            h = b[3] - b[1]
            starts_late = x0 < b[0] <= x0 + 12 * height and b[2] > x0
            if top <= b[1] <= bottom and 0.6 <= h / max(height, 1.0) <= 1.6 and starts_late:
                lead = (x0, b[1], b[0], b[3])
                if edges is None or _edge_density(edges, lead) >= ref / 3:
                    b[0] = x0
        if edges is not None:
            for y in (block[-1][1] + pitch, block[0][1] - pitch):
                slot = (x0, y, x0 + width, min(float(rows), y + height))
                # a line cut by the image's edge shows only part of its strokes
                need = ref / 3 if y + height <= rows and y >= 0 else ref / 10
                # and clearly more than the frame's texture (noise has edges everywhere)
                need = max(need, 1.5 * background)
                if 0 <= y < rows and ref > 0 and _edge_density(edges, slot) >= need:
                    added.append(slot)
    added = [_clip_to_edges(slot, edges) for slot in added]
    return [(b[0], b[1], b[2], b[3]) for b in out] + added


def _clip_to_edges(slot: Box, edges: np.ndarray | None) -> Box:
    """An added line slot (as wide as the block's typical line) ends where its strokes end, plus
    a margin of half its height: a short line does not carry the block's width over the image."""
    if edges is None:
        return slot
    x0, y0, x1, y1 = slot
    r0, r1 = max(0, int(y0)), max(0, int(np.ceil(y1)))
    c0, c1 = max(0, int(x0)), max(0, int(np.ceil(x1)))
    cols = np.nonzero(edges[r0:r1, c0:c1].any(axis=0))[0]
    if not cols.size:
        return slot
    return (x0, y0, min(x1, c0 + float(cols[-1]) + 1 + 0.5 * (y1 - y0)), y1)


class Prefilter:
    """Which frames need the full scan: the same detector on the frame scaled to a shorter side
    of 512 pixels (never shrunk by more than half, so that small overlay text keeps enough
    pixels), with lower thresholds so that it errs towards "maybe text", and no second look,
    no block completion, no OCR. A frame it finds nothing in is not scanned further. A 512 x 512
    CT slice costs 45 % of the first full pass. Its recall against the full scan is measured on
    both shared corpora (``make deid-score``): at 384 pixels it lost 4 of 154 frames with
    text (256 x 256 MR, an 800 x 800 CT), at 448 two, at 512 none."""

    name = "prefilter"

    def __init__(self, model_path: Path | None = None, side: int = 512) -> None:
        self.detector = DbDetector(
            model_path, min_side=side, max_side=4 * side, thresh=0.2, box_thresh=0.3, shrink=True
        )

    def available(self) -> bool:
        return self.detector.available()

    def candidate(self, image: np.ndarray) -> bool:
        return bool(self.detector.detect(image))


def make_detector(name: str, model_path: Path | None = None, min_side: int = 736) -> TextDetector:
    if name == "db":
        return DbDetector(model_path, min_side=min_side)
    if name == "tesseract":
        return TesseractDetector()
    raise DeidError("unknown text detector", detector=name)
