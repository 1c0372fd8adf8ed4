"""Large instances are de-identified streamed: same bytes out as the in-memory path."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

from bridge.deid.build import NoDetector
from bridge.deid.engine import Deidentifier, write_result
from bridge.deid.pixels.clean import PixelCleaner, PixelPolicy
from bridge.deid.profile import build_profile
from bridge.deid.pseudonyms import Pseudonymizer
from bridge.domain.errors import DeidError
from bridge.sample import make_study
from tests.helpers import leaks

SECRET = b"unit-test-secret-0123456789"


def _engine(stream_above: int, pixels: PixelCleaner | None = None) -> Deidentifier:
    return Deidentifier(
        build_profile(), Pseudonymizer(SECRET), "test", pixels=pixels, stream_above=stream_above
    )


def _encapsulated(tmp_path: Path) -> Path:
    study = make_study(tmp_path / "enc", 1, rows=16, columns=16)
    ds = dcmread(study.paths[0])
    frames = [b"\xff\xd8\xff\xe0" + bytes(range(200)) + b"\xff\xd9"]
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    out = tmp_path / "enc.dcm"
    ds.save_as(out, enforce_file_format=True)
    return out


def _converted(tmp_path: Path, flag: str) -> Path:
    study = make_study(tmp_path / flag.strip("+"), 1, rows=32, columns=32)
    out = tmp_path / f"{flag.strip('+')}.dcm"
    subprocess.run(["dcmconv", flag, str(study.paths[0]), str(out)], check=True)
    return out


@pytest.mark.parametrize("kind", ["native", "bigendian", "implicit", "encapsulated", "deflate"])
def test_streamed_output_is_byte_identical(tmp_path: Path, kind: str) -> None:
    if kind == "native":
        src = make_study(tmp_path / "n", 1, rows=64, columns=64).paths[0]
    elif kind == "encapsulated":
        src = _encapsulated(tmp_path)
    else:
        src = _converted(tmp_path, {"bigendian": "+tb", "implicit": "+ti", "deflate": "+td"}[kind])
    in_memory = _engine(stream_above=1 << 40).deidentify_file(src)
    streamed = _engine(stream_above=0).deidentify_file(src)
    # deflated datasets are never streamed (their offsets are not file offsets)
    assert (streamed.pixel_source is None) == (kind == "deflate")
    a, b = tmp_path / "a.dcm", tmp_path / "b.dcm"
    write_result(in_memory, a)
    write_result(streamed, b)
    assert a.read_bytes() == b.read_bytes()
    out = dcmread(b)
    assert out.PixelData == dcmread(src).PixelData


def test_streamed_instance_has_no_planted_identity(tmp_path: Path) -> None:
    study = make_study(tmp_path / "s", 1, rows=64, columns=64)
    result = _engine(stream_above=0).deidentify_file(study.paths[0])
    write_result(result, tmp_path / "out.dcm")
    assert leaks(dcmread(tmp_path / "out.dcm"), study.planted) == []


def test_pixels_that_must_be_scanned_are_not_streamed(tmp_path: Path) -> None:
    src = make_study(tmp_path / "s", 1, rows=64, columns=64).paths[0]
    cleaner = PixelCleaner(PixelPolicy(default="mask"), NoDetector())
    result = _engine(0, cleaner).deidentify_file(src)
    assert result.pixel_source is None  # read whole, for the scan


def test_too_large_to_scan_low_risk_is_streamed_high_risk_is_held(tmp_path: Path) -> None:
    study = make_study(tmp_path / "s", 1, rows=64, columns=64)
    cleaner = PixelCleaner(PixelPolicy(default="mask", max_bytes=1024), NoDetector())
    result = _engine(0, cleaner).deidentify_file(study.paths[0])  # CT: low risk
    assert result.pixel_source is not None
    assert result.pixels is not None and result.pixels.action == "not-scanned"
    ds = dcmread(study.paths[0])
    ds.Modality = "US"
    us = tmp_path / "us.dcm"
    ds.save_as(us, enforce_file_format=True)
    with pytest.raises(DeidError, match="burned-in"):
        _engine(0, cleaner).deidentify_file(us)


def test_truncated_pixel_data_is_refused_not_written_short(tmp_path: Path) -> None:
    src = make_study(tmp_path / "s", 1, rows=64, columns=64).paths[0]
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(src.read_bytes()[:-100])
    result = _engine(0).deidentify_file(cut)
    with pytest.raises(DeidError, match="truncated"):
        write_result(result, tmp_path / "out.dcm")
