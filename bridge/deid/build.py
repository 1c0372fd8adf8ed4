"""Build the de-identification engine from its settings section (one place for the worker and
the CLI)."""

from __future__ import annotations

from bridge.config import DeidSettings, PixelSettings
from bridge.deid.engine import Deidentifier
from bridge.deid.pixels.clean import PixelCleaner, PixelPolicy
from bridge.deid.pixels.detect import Prefilter, make_detector
from bridge.deid.profile import build_profile
from bridge.deid.pseudonyms import Pseudonymizer
from bridge.domain.errors import ConfigError


class NoDetector:
    """The "off" detector: never available, so high-risk instances are held."""

    name = "off"

    def available(self) -> bool:
        return False

    def detect(self, image: object) -> list[tuple[float, float, float, float]]:
        return []


def make_pixel_cleaner(cfg: PixelSettings) -> PixelCleaner:
    policy = PixelPolicy(
        default=cfg.default,
        modalities=dict(cfg.modalities),
        max_bytes=cfg.max_bytes,
        pad=cfg.pad,
        read_text=cfg.read_text,
        unsure=cfg.unsure,
        identity_ocr=cfg.identity_ocr,
    )
    detector = NoDetector() if cfg.detector == "off" else make_detector(cfg.detector)
    refine = None
    if cfg.detector == "db" and cfg.refine_side > 0:
        refine = make_detector("db", min_side=cfg.refine_side)
    prefilter = Prefilter() if cfg.detector == "db" and cfg.prefilter else None
    return PixelCleaner(policy, detector, refine, prefilter=prefilter, threads=cfg.frame_threads)


def make_deidentifier(deid: DeidSettings, profile: str | None = None) -> Deidentifier:
    secret = deid.secret.get_secret_value() if deid.secret else ""
    if len(secret) < 16:
        raise ConfigError("BRIDGE_DEID__SECRET (at least 16 characters) is required")
    return Deidentifier(
        build_profile(profile or deid.profile, deid.options),
        Pseudonymizer(secret.encode(), deid.pseudonym_prefix),
        deid.method_text,
        pixels=make_pixel_cleaner(deid.pixels),
        stream_above=deid.stream_above_bytes,
    )
