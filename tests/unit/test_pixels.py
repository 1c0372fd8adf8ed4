"""Burned-in text: risk from the header, text found in the pixels, masked (or held)."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from bridge.deid.build import NoDetector
from bridge.deid.engine import Deidentifier, masked_instance_uid
from bridge.deid.pixels.clean import PixelCleaner, PixelPolicy
from bridge.deid.pixels.detect import DbDetector, complete_blocks
from bridge.deid.pixels.ocr import tesseract_available
from bridge.deid.pixels.risk import assess
from bridge.deid.profile import build_profile
from bridge.deid.pseudonyms import Pseudonymizer
from bridge.domain.errors import DeidError
from bridge.sample import PlantedPatient, make_burned_in, make_study

SECRET = b"pixel-secret-0123456789abcdef"
LINES = ["Name: PLANTFAMILY^PLANTGIVEN", "ID: PID-PLANT-77123", "DOB: 04/17/1961"]
DETECTOR = DbDetector()
needs_detector = pytest.mark.skipif(not DETECTOR.available(), reason="text detector missing")


def _engine(policy: PixelPolicy | None = None, detector=DETECTOR) -> Deidentifier:
    cleaner = PixelCleaner(policy or PixelPolicy(), detector)
    return Deidentifier(build_profile("reading"), Pseudonymizer(SECRET), "test", pixels=cleaner)


def _saved(res):
    buf = BytesIO()
    res.dataset.save_as(buf, enforce_file_format=True)
    return dcmread(BytesIO(buf.getvalue()))


def _covered(before: np.ndarray, after: np.ndarray, box) -> float:
    x0, y0, x1, y1 = box
    return float((before[y0:y1, x0:x1] != after[y0:y1, x0:x1]).mean())


@needs_detector
def test_text_burned_into_ultrasound_is_masked(tmp_path):
    path = tmp_path / "us.dcm"
    boxes = make_burned_in(path, LINES)
    before = dcmread(path).pixel_array
    res = _engine().deidentify_file(path)
    out = _saved(res)
    after = out.pixel_array
    assert res.pixels is not None and res.pixels.action == "masked"
    assert res.pixels.regions >= len(LINES)
    for box in boxes:
        assert _covered(before, after, box) >= 0.6, box  # glyph background included
        x0, y0, x1, y1 = box
        text_pixels = before[y0:y1, x0:x1] == 255
        assert (after[y0:y1, x0:x1][text_pixels] != 255).all(), "a glyph pixel survived"
    outside = np.ones(before.shape, bool)
    for x0, y0, x1, y1 in boxes:
        outside[max(0, y0 - 12) : y1 + 12, max(0, x0 - 12) : x1 + 12] = False
    assert float((before != after)[outside].mean()) < 0.01  # the image itself is left alone
    assert out.BurnedInAnnotation == "NO"
    original_uid = str(dcmread(path).SOPInstanceUID)
    assert out.SOPInstanceUID == masked_instance_uid(Pseudonymizer(SECRET), original_uid)
    assert res.uid_map[str(out.SOPInstanceUID)] == original_uid
    codes = [c.CodeValue for c in out.DeidentificationMethodCodeSequence]
    assert "113101" in codes  # Clean Pixel Data Option
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


@needs_detector
@pytest.mark.skipif(not tesseract_available(), reason="tesseract missing")
def test_masked_regions_read_as_the_patients_identifiers_are_counted(tmp_path):
    path = tmp_path / "us.dcm"
    make_burned_in(path, LINES, font_size=22)
    res = _engine().deidentify_file(path)
    assert res.pixels is not None and res.pixels.identity_regions >= 1


@needs_detector
def test_compressed_pixels_are_decoded_masked_and_stored_uncompressed(tmp_path):
    path = tmp_path / "us.dcm"
    boxes = make_burned_in(path, LINES)
    ds = dcmread(path)
    before = ds.pixel_array.copy()
    ds.compress(RLELossless, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
    out = _saved(_engine().deidentify_file(path))
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert all(_covered(before, out.pixel_array, b) >= 0.6 for b in boxes)


@needs_detector
def test_hold_policy_holds_an_instance_with_text(tmp_path):
    path = tmp_path / "us.dcm"
    make_burned_in(path, LINES)
    with pytest.raises(DeidError, match="possible burned-in text"):
        _engine(PixelPolicy(modalities={"US": "hold"})).deidentify_file(path)


@needs_detector
def test_declared_burned_in_annotation_that_is_not_found_is_held(tmp_path):
    path = tmp_path / "us.dcm"
    make_burned_in(path, [], burned_in_annotation="YES")
    with pytest.raises(DeidError, match="possible burned-in text"):
        _engine().deidentify_file(path)


def test_high_risk_is_held_when_no_scan_can_run_low_risk_passes(tmp_path):
    path = tmp_path / "us.dcm"
    make_burned_in(path, LINES)
    engine = _engine(detector=NoDetector())
    with pytest.raises(DeidError, match="possible burned-in text"):
        engine.deidentify_file(path)
    ct = make_study(tmp_path / "ct", 1, rows=8, columns=8).paths[0]
    res = engine.deidentify_file(ct)
    assert res.pixels is not None and res.pixels.action == "not-scanned"
    assert res.dataset.PixelData == dcmread(ct).PixelData


def test_pass_policy_does_not_scan(tmp_path):
    path = tmp_path / "us.dcm"
    make_burned_in(path, LINES)
    res = _engine(PixelPolicy(modalities={"US": "pass"}), detector=NoDetector()).deidentify_file(
        path
    )
    assert res.pixels is not None and res.pixels.detail == "policy pass"


def test_header_risk_assessment():
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Modality = "CT"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert not assess(ds).high
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    assert assess(ds).high
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.BurnedInAnnotation = "YES"
    assert assess(ds).reasons == ("Burned In Annotation is YES",)
    ds2 = Dataset()
    ds2.Modality = "US"
    ds2.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    assert assess(ds2).high


def test_a_missed_line_inside_an_aligned_block_is_completed():
    lines = [(10.0, 10.0 + 20 * i, 120.0, 22.0 + 20 * i) for i in (0, 1, 3, 4)]
    out = complete_blocks(lines, rows=200)
    added = out[len(lines) :]
    assert len(added) == 1 and abs(added[0][1] - 50.0) < 1e-6


def test_identity_never_in_the_pixel_outcome(tmp_path):
    path = tmp_path / "us.dcm"
    make_burned_in(path, LINES)
    res = _engine(detector=NoDetector(), policy=PixelPolicy(default="pass")).deidentify_file(path)
    text = repr(res.pixels)
    assert all(v not in text for v in PlantedPatient().__dict__.values() if isinstance(v, str))


@needs_detector
def test_nothing_to_mask_leaves_encoded_pixels_byte_for_byte(tmp_path):
    path = tmp_path / "us.dcm"
    make_burned_in(path, [])
    ds = dcmread(path)
    ds.compress(RLELossless, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
    res = _engine().deidentify_file(path)
    assert res.pixels is not None and res.pixels.action == "clean"
    assert res.dataset.file_meta.TransferSyntaxUID == RLELossless
    assert res.dataset.PixelData == dcmread(path).PixelData


@needs_detector
def test_every_frame_of_a_multiframe_object_is_scanned(tmp_path):
    path = tmp_path / "us.dcm"
    boxes = make_burned_in(path, LINES)
    ds = dcmread(path)
    text_frame = ds.pixel_array
    blank = np.full_like(text_frame, 60)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    ds.NumberOfFrames = 3
    ds.PixelData = np.stack([blank, text_frame, blank]).tobytes()
    ds.save_as(path, enforce_file_format=True)
    res = _engine().deidentify_file(path)
    out = _saved(res).pixel_array
    assert out.shape == (3, *text_frame.shape)
    assert (out[0] == blank).all() and (out[2] == blank).all()
    assert all(_covered(text_frame, out[1], b) >= 0.6 for b in boxes)


def test_monochrome1_masks_with_the_value_that_displays_black():
    from bridge.deid.pixels.frames import fill_value, view8

    frame = np.array([[0, 100], [200, 4095]], np.uint16)
    assert fill_value(frame, "MONOCHROME1") == 4095 and fill_value(frame, "MONOCHROME2") == 0
    assert view8(frame, "MONOCHROME1")[1, 1] == 0 and view8(frame, "MONOCHROME2")[1, 1] == 255


@needs_detector
def test_colour_images_are_scanned_and_masked(tmp_path):
    path = tmp_path / "sc.dcm"
    boxes = make_burned_in(path, LINES, modality="SC")
    ds = dcmread(path)
    grey = ds.pixel_array
    rgb = np.stack([grey, grey // 2, grey], axis=-1).astype(np.uint8)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.PixelData = rgb.tobytes()
    ds.save_as(path, enforce_file_format=True)
    out = _saved(_engine().deidentify_file(path))
    after = out.pixel_array
    assert out.PhotometricInterpretation == "RGB" and after.shape == rgb.shape
    for x0, y0, x1, y1 in boxes:
        glyphs = grey[y0:y1, x0:x1] == 255
        assert (after[y0:y1, x0:x1][glyphs] == 0).all()
