"""The burned-in text policy and the masking itself.

Per modality (``deid.pixels.modalities``, default ``deid.pixels.default``):

- ``mask``: scan every frame; fill each text region found with the colour that displays black;
  Burned In Annotation becomes NO and the instance gets a new SOP Instance UID (its pixels
  changed). Nothing found: forwarded as it is, unless the header declares burned-in annotation
  (then held: the declared text was not found).
- ``hold``: scan; any text found holds the instance for review ("possible burned-in text").
- ``pass``: not scanned.

Whatever the policy, a high-risk instance (see :mod:`risk`) that cannot be scanned (no detector,
undecodable or oversized pixel data) is held, never forwarded unchecked.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydicom.dataset import Dataset

from bridge.deid.pixels import frames as px
from bridge.deid.pixels.detect import Prefilter, TextDetector, complete_blocks
from bridge.deid.pixels.regions import Reader, settle
from bridge.deid.pixels.risk import Risk, assess, text_of
from bridge.domain.errors import DeidError

Action = Literal["mask", "hold", "pass"]
HOLD_REASON = "possible burned-in text"
#: Pixel Data, Float Pixel Data, Double Float Pixel Data
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


@dataclass(frozen=True)
class PixelPolicy:
    default: Action = "mask"
    modalities: Mapping[str, Action] = field(default_factory=dict)
    #: Pixel data larger than this (decoded) is not scanned (a high-risk instance is held).
    max_bytes: int = 512 * 1024 * 1024
    #: Margin around each region found, as a share of the region's height.
    pad: float = 0.0
    #: Read the regions with Tesseract to count those that show the patient's identifiers.
    read_text: bool = True
    #: A region that looks like text to the detector but not in shape, and that OCR cannot
    #: decide on: "mask" it, or "hold" the instance for review.
    unsure: Literal["mask", "hold"] = "mask"
    #: In frames the pre-filter passes, Tesseract reads the whole frame and any word spelling
    #: the header's identity (name, IDs, dates, accession, institution) is masked.
    identity_ocr: bool = True

    def action_for(self, modality: str) -> Action:
        return self.modalities.get(modality.strip().upper(), self.default)


@dataclass
class PixelOutcome:
    """What happened to the pixels of one instance (counts only, no text)."""

    action: Literal["not-scanned", "clean", "masked", "hold"]
    risk: Risk
    detail: str = ""
    frames: int = 0
    regions: int = 0
    #: Regions whose text, read by Tesseract, contains one of the dataset's identifying tokens.
    identity_regions: int = 0
    #: Share of the pixels filled (all frames).
    area: float = 0.0
    #: Frames the full detector looked at (the pre-filter passed the others as text-free).
    scanned: int = 0
    #: Frames where text was found and masked.
    with_text: int = 0
    #: Text-like regions not shaped like text that OCR read no words in (left unmasked).
    rejected: int = 0
    #: Such regions OCR could not decide on (masked under the default policy).
    unsure: int = 0
    #: Words spelling the header's identity that OCR read where the detector found nothing.
    identity_added: int = 0


@dataclass(frozen=True)
class _FrameScan:
    boxes: list[px.Box]
    rejected: int
    scanned: bool
    unsure: int = 0
    identity_added: int = 0


def _reader() -> Reader | None:
    from bridge.deid.pixels.ocr import judge, tesseract_available

    return judge if tesseract_available() else None


def _wanted(tokens: AbstractSet[str]) -> set[str]:
    """The header's identifying tokens as OCR would read them (letters and digits, 4 or more)."""
    return {n for n in (_norm(t) for t in tokens) if len(n) >= 4}


def _identity_boxes(view: np.ndarray, found: list[px.Box], wanted: set[str]) -> list[px.Box]:
    """Words Tesseract reads anywhere in the frame that spell one of the header's identifying
    tokens, and that no region found covers, with the rest of their line: masked whatever the
    detector said."""
    from bridge.deid.pixels.ocr import tesseract_available, words
    from bridge.deid.pixels.regions import extend, grow, tighten

    if not tesseract_available():
        return []
    scale = 2.0 if min(view.shape[:2]) <= 640 else 1.0
    try:
        read = words(view, scale=scale)
    except DeidError:
        return []
    added: list[px.Box] = []
    for w in read:
        text = _norm(w.text)
        if len(text) < 4 or not any(t in text or text in t for t in wanted):
            continue
        box = tighten(w.box, view)  # OCR's word box reaches beyond the glyphs
        if _covered(box, found + added) >= 0.5:
            continue
        for _ in range(64):  # the rest of the line: "Name: DOE JOHN" holds more than the word
            longer = extend(box, view)
            if longer == box:
                break
            box = longer
        added.append(grow(box, 0.0, view.shape[:2]))
    return added


def _covered(box: px.Box, regions: list[px.Box]) -> float:
    """The largest share of ``box`` inside any one of ``regions``."""
    area = max(1e-6, (box[2] - box[0]) * (box[3] - box[1]))
    best = 0.0
    for r in regions:
        iw = min(box[2], r[2]) - max(box[0], r[0])
        ih = min(box[3], r[3]) - max(box[1], r[1])
        if iw > 0 and ih > 0:
            best = max(best, iw * ih / area)
    return best


def _norm(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


class PixelCleaner:
    def __init__(
        self,
        policy: PixelPolicy,
        detector: TextDetector,
        refine: TextDetector | None = None,
        prefilter: Prefilter | None = None,
        threads: int = 1,
    ) -> None:
        self.policy = policy
        self.detector = detector
        #: Where the detector found text, a second look at a larger scale (small glyphs, lines
        #: the first pass cut short); text-free images pay for one pass only.
        self.refine = refine
        #: A cheap first look deciding which frames get the full detector (None: every frame).
        self.prefilter = prefilter
        #: Frames of a multi-frame object scanned at once.
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def process(self, ds: Dataset, tokens: AbstractSet[str]) -> PixelOutcome:
        """Scan and mask ``ds`` in place, or raise DeidError(HOLD_REASON) to hold it."""
        risk = assess(ds)
        if not any(tag in ds for tag in _PIXEL_TAGS):
            return PixelOutcome("not-scanned", risk, "no pixel data")
        if 0x7FE00010 not in ds:
            return self._unscannable(risk, "float pixel data is not scanned")
        action = self.policy.action_for(text_of(ds, 0x00080060))
        if action == "pass":
            return PixelOutcome("not-scanned", risk, "policy pass")
        if px.pixel_bytes(ds) > self.policy.max_bytes:
            return self._unscannable(risk, "pixel data larger than deid.pixels.max_bytes")
        if not self.detector.available():
            return self._unscannable(risk, f"text detector {self.detector.name} unavailable")
        try:
            data = px.decode(ds)
        except DeidError as exc:
            return self._unscannable(risk, exc.message)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        views = [px.view8(frame, photometric) for frame in data]
        wanted = _wanted(tokens) if self.policy.identity_ocr else set()
        scans = self._map(lambda view: self._scan(view, wanted), views)
        found = [scan.boxes for scan in scans]
        rejected = sum(scan.rejected for scan in scans)
        scanned = sum(1 for scan in scans if scan.scanned)
        with_text = sum(1 for scan in scans if scan.boxes)
        unsure = sum(scan.unsure for scan in scans)
        identity_added = sum(scan.identity_added for scan in scans)
        if unsure and self.policy.unsure == "hold":
            raise DeidError(HOLD_REASON, why="text-like region OCR could not decide on")
        regions = sum(len(b) for b in found)
        if regions == 0:
            if "Burned In Annotation is YES" in risk.reasons:
                raise DeidError(HOLD_REASON, why="declared burned-in annotation not found")
            return PixelOutcome("clean", risk, frames=len(data), scanned=scanned, rejected=rejected)
        if action == "hold":
            raise DeidError(HOLD_REASON, regions=regions)
        identity = self._identity_regions(views, found, tokens) if self.policy.read_text else 0
        area = 0.0
        for frame, boxes in zip(data, found, strict=True):
            area += px.fill(frame, boxes, px.fill_value(frame, photometric))
        px.write_back(ds, data)
        ds.BurnedInAnnotation = "NO"
        return PixelOutcome(
            "masked",
            risk,
            frames=len(data),
            regions=regions,
            identity_regions=identity,
            area=area / max(1, len(data)),
            scanned=scanned,
            with_text=with_text,
            rejected=rejected,
            unsure=unsure,
            identity_added=identity_added,
        )

    def _scan(self, view: np.ndarray, wanted: set[str] | None = None) -> _FrameScan:
        """One frame: pre-filter, detector, second look, block completion, settled regions,
        and the header's identity wherever Tesseract reads it in the frame."""
        if self.prefilter is not None and not self.prefilter.candidate(view):
            return _FrameScan([], 0, scanned=False)
        boxes = self.detector.detect(view)
        if boxes and self.refine is not None:
            boxes += self.refine.detect(view)
        settled = settle(
            complete_blocks(boxes, view.shape[0], view), view, self.policy.pad, _reader()
        )
        found = list(settled.boxes)
        added = _identity_boxes(view, found, wanted) if wanted else []
        return _FrameScan(
            found + added,
            settled.rejected,
            scanned=True,
            unsure=settled.unsure,
            identity_added=len(added),
        )

    def _map(
        self, fn: Callable[[np.ndarray], _FrameScan], views: list[np.ndarray]
    ) -> list[_FrameScan]:
        if self.threads <= 1 or len(views) < 2:
            return [fn(v) for v in views]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="pixels")
        return list(self._pool.map(fn, views))

    def unscanned_outcome(self, ds: Dataset, pixel_tag: int | None) -> PixelOutcome | None:
        """For a header read without its pixel data: the outcome when the pixels will not be
        scanned (so they need not be read), None when they must be scanned. Raises
        DeidError(HOLD_REASON) as :meth:`process` would."""
        risk = assess(ds)
        if pixel_tag is None:
            return PixelOutcome("not-scanned", risk, "no pixel data")
        if pixel_tag != 0x7FE00010:
            return self._unscannable(risk, "float pixel data is not scanned")
        if self.policy.action_for(text_of(ds, 0x00080060)) == "pass":
            return PixelOutcome("not-scanned", risk, "policy pass")
        if px.pixel_bytes(ds) > self.policy.max_bytes:
            return self._unscannable(risk, "pixel data larger than deid.pixels.max_bytes")
        return None

    @staticmethod
    def _unscannable(risk: Risk, why: str) -> PixelOutcome:
        if risk.high:
            raise DeidError(HOLD_REASON, why=why, risk="; ".join(risk.reasons))
        return PixelOutcome("not-scanned", risk, why)

    @staticmethod
    def _identity_regions(
        views: list[Any], found: list[list[px.Box]], tokens: AbstractSet[str]
    ) -> int:
        from bridge.deid.pixels.ocr import read_regions, tesseract_available

        wanted = {_norm(t) for t in tokens}
        wanted = {t for t in wanted if len(t) >= 3}
        if not wanted or not tesseract_available():
            return 0
        hits = 0
        for view, boxes in zip(views, found, strict=True):
            try:
                texts = read_regions(view, boxes)
            except DeidError:
                return 0
            hits += sum(1 for t in texts if any(w in _norm(t) for w in wanted))
        return hits
