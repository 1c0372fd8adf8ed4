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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydicom.dataset import Dataset

from bridge.deid.pixels import frames as px
from bridge.deid.pixels.detect import TextDetector, complete_blocks
from bridge.deid.pixels.regions import Regions, WordCounter, settle
from bridge.deid.pixels.risk import Risk, assess
from bridge.errors import DeidError

Action = Literal["mask", "hold", "pass"]
HOLD_REASON = "possible burned-in text"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


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


def _norm(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


class PixelCleaner:
    def __init__(
        self, policy: PixelPolicy, detector: TextDetector, refine: TextDetector | None = None
    ) -> None:
        self.policy = policy
        self.detector = detector
        #: Where the detector found text, a second look at a larger scale (small glyphs, lines
        #: the first pass cut short); text-free images pay for one pass only.
        self.refine = refine

    def process(self, ds: Dataset, tokens: set[str]) -> PixelOutcome:
        """Scan and mask ``ds`` in place, or raise DeidError(HOLD_REASON) to hold it."""
        risk = assess(ds)
        if not any(k in ds for k in _PIXEL_KEYWORDS):
            return PixelOutcome("not-scanned", risk, "no pixel data")
        if "PixelData" not in ds:
            return self._unscannable(risk, "float pixel data is not scanned")
        action = self.policy.action_for(str(ds.get("Modality", "") or ""))
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
        read = self._word_counter()
        found: list[list[px.Box]] = []
        views = []
        rejected = 0
        for frame in data:
            view = px.view8(frame, photometric)
            boxes = self.detector.detect(view)
            if boxes and self.refine is not None:
                boxes += self.refine.detect(view)
            settled: Regions = settle(
                complete_blocks(boxes, view.shape[0], view), view, self.policy.pad, read
            )
            rejected += settled.rejected
            found.append(settled.boxes)
            views.append(view)
        regions = sum(len(b) for b in found)
        if regions == 0:
            if "Burned In Annotation is YES" in risk.reasons:
                raise DeidError(HOLD_REASON, why="declared burned-in annotation not found")
            return PixelOutcome("clean", risk, frames=len(data))
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
        )

    def unscanned_outcome(self, ds: Dataset, pixel_tag: int | None) -> PixelOutcome | None:
        """For a header read without its pixel data: the outcome when the pixels will not be
        scanned (so they need not be read), None when they must be scanned. Raises
        DeidError(HOLD_REASON) as :meth:`process` would."""
        risk = assess(ds)
        if pixel_tag is None:
            return PixelOutcome("not-scanned", risk, "no pixel data")
        if pixel_tag != 0x7FE00010:
            return self._unscannable(risk, "float pixel data is not scanned")
        if self.policy.action_for(str(ds.get("Modality", "") or "")) == "pass":
            return PixelOutcome("not-scanned", risk, "policy pass")
        if px.pixel_bytes(ds) > self.policy.max_bytes:
            return self._unscannable(risk, "pixel data larger than deid.pixels.max_bytes")
        return None

    @staticmethod
    def _word_counter() -> WordCounter | None:
        from bridge.deid.pixels.ocr import count_words, tesseract_available

        return count_words if tesseract_available() else None

    @staticmethod
    def _unscannable(risk: Risk, why: str) -> PixelOutcome:
        if risk.high:
            raise DeidError(HOLD_REASON, why=why, risk="; ".join(risk.reasons))
        return PixelOutcome("not-scanned", risk, why)

    @staticmethod
    def _identity_regions(views: list[Any], found: list[list[px.Box]], tokens: set[str]) -> int:
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
