"""Burned-in text, second part: which detector regions are masked (shape, OCR confirmation,
a lone letter after a line, margins), Tesseract in the process, the pre-filter, frames in
parallel, and the stricter scoring measure."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread

from bridge.deid.pixels.clean import PixelCleaner, PixelPolicy
from bridge.deid.pixels.detect import MODEL, DbDetector, Prefilter
from bridge.deid.pixels.ocr import count_words, judge, read_regions, tesseract_available
from bridge.deid.pixels.regions import (
    extend,
    fit_lines,
    grow,
    polarity,
    row_polarity,
    settle,
    unsure,
)
from bridge.deid.pixels.score import PixelScore, score_pair
from bridge.sample import make_burned_in, make_study

DETECTOR = DbDetector()
needs_detector = pytest.mark.skipif(not DETECTOR.available(), reason="text detector missing")
needs_ocr = pytest.mark.skipif(not tesseract_available(), reason="tesseract missing")


def _text(image: np.ndarray, xy: tuple[int, int], text: str, size: int, fill: int = 255) -> None:
    img = Image.fromarray(image)
    ImageDraw.Draw(img).text(xy, text, fill=fill, font=ImageFont.load_default(size=size))
    image[:] = np.asarray(img)


def test_the_detector_model_ships_with_the_bridge_and_rapidocr_is_not_needed():
    import importlib.util

    assert MODEL.is_file() and MODEL.stat().st_size > 1_000_000
    assert (MODEL.parent / "NOTICE").is_file()
    assert importlib.util.find_spec("rapidocr_onnxruntime") is None
    assert importlib.util.find_spec("cv2") is None  # opencv came only with rapidocr


def test_a_region_unlike_any_line_is_unsure_lines_and_their_peers_are_not():
    lines = [(20.0, 20.0, 120.0, 28.0), (20.0, 32.0, 100.0, 40.0)]
    blob = (60.0, 80.0, 180.0, 190.0)  # 110 px tall where lines are 8: anatomy texture
    title = (20.0, 200.0, 250.0, 240.0)  # tall but elongated: a title line
    assert unsure([*lines, blob, title], rows=256) == [False, False, True, False]
    # alone on a large frame, a box of ordinary text height is not unsure either
    assert unsure([(10.0, 10.0, 30.0, 24.0)], rows=512) == [False]


@needs_ocr
def test_an_unsure_region_is_masked_only_when_ocr_reads_words_in_it():
    rng = np.random.default_rng(1)
    image = rng.normal(120, 20, (256, 256)).clip(0, 255).astype(np.uint8)
    _text(image, (20, 150), "HENRY", 40)
    words_blob = (10.0, 140.0, 170.0, 200.0)
    noise_blob = (150.0, 20.0, 250.0, 120.0)
    line = (10.0, 10.0, 110.0, 18.0)
    got = settle([line, words_blob, noise_blob], image, 0.0, judge)
    assert got.rejected == 1 and got.confirmed == 1
    assert len(got.boxes) == 2
    assert not any(b[0] >= 149 for b in got.boxes)  # the noise blob is left alone
    # no OCR: the region is unsure, and masked (fail safe)
    got = settle([noise_blob], image, 0.0, None)
    assert len(got.boxes) == 1 and got.unsure == 1
    # a line found inside a rejected blob is still masked
    inner = (160.0, 60.0, 240.0, 68.0)
    got = settle([line, noise_blob, inner], image, 0.0, judge)
    assert got.rejected == 1 and any(b[0] <= 160 and b[2] >= 240 for b in got.boxes)


def test_a_line_is_extended_over_a_lone_letter_after_a_gap_and_not_into_empty_space():
    image = np.zeros((40, 120), np.uint8)
    image[10:16, 10:50:3] = 255  # the strokes of the line the detector found ...
    image[10:16, 56:59] = 255  # ... and "M", a gap of one height after it
    x0, y0, x1, y1 = extend((10.0, 10.0, 50.0, 16.0), image)
    assert x1 >= 59 and x0 == 10.0
    image[10:16, 56:59] = 0
    assert extend((10.0, 10.0, 50.0, 16.0), image)[2] == 50.0


def test_a_line_is_not_extended_along_the_edge_of_anatomy_crossing_it():
    image = np.zeros((40, 120), np.uint8)
    image[10:16, 30:70:3] = 255  # the strokes of the line the detector found
    image[14:16, 0:30] = 255  # a table's bright edge running into the line, two rows of six
    image[14:16, 70:120] = 255
    assert extend((30.0, 10.0, 70.0, 16.0), image) == (30.0, 10.0, 70.0, 16.0)
    image[10:16, 76:79] = 255  # a letter after the gap is still taken in
    assert extend((30.0, 10.0, 70.0, 16.0), image)[2] >= 79


def test_a_line_of_white_text_is_fitted_to_its_glyphs_not_to_dark_anatomy_above_and_below():
    image = np.full((40, 120), 120, np.uint8)
    image[22:27, 20:90:2] = 250  # white glyphs, rows 22-26
    image[14:35, 40:44] = 10  # a dark vessel crossing the detector's box, rows 14-34
    image[14:35, 70:73] = 10
    (fit,) = fit_lines((15.0, 15.0, 95.0, 34.0), image)
    assert (fit[1], fit[3]) == (22.0, 27.0)
    assert polarity(image[15:34, 15:95], 120) == 0  # the counts alone cannot tell
    assert row_polarity(image[15:34, 15:95], 120) == 1  # where the ink gathers does
    # black text on white: the other way round
    inverted = 255 - image
    (fit,) = fit_lines((15.0, 15.0, 95.0, 34.0), inverted)
    assert (fit[1], fit[3]) == (22.0, 27.0)


def test_every_region_gets_a_row_above_and_below_inside_the_frame():
    assert grow((5.0, 0.0, 20.0, 6.0), 0.0, (10, 30)) == (5.0, 0.0, 20.0, 7.0)
    assert grow((5.0, 3.0, 20.0, 9.0), 0.5, (10, 30)) == (2.0, 0.0, 23.0, 10.0)


@needs_ocr
def test_tesseract_reads_in_the_process():
    image = np.zeros((40, 300), np.uint8)
    _text(image, (8, 8), "PLANTFAMILY 77123", 20)
    assert count_words(image) >= 1
    (text,) = read_regions(image, [(0.0, 0.0, 300.0, 40.0)])
    assert "PLANTFAMILY" in text.replace(" ", "")


@needs_detector
def test_the_prefilter_passes_frames_with_text_and_skips_text_free_ct_slices(tmp_path):
    from bridge.deid.pixels.frames import decode, view8

    pre = Prefilter()
    study = make_study(tmp_path / "ct", 3, seed=2)
    for path in study.paths:
        ds = dcmread(path)
        assert not pre.candidate(view8(decode(ds)[0], "MONOCHROME2"))
    path = tmp_path / "us.dcm"
    make_burned_in(path, ["Name: PLANTFAMILY", "ID: 77123"], font_size=14)
    ds = dcmread(path)
    assert pre.candidate(view8(decode(ds)[0], "MONOCHROME2"))


@needs_detector
def test_frames_scanned_in_parallel_give_what_one_thread_gives_and_are_counted(tmp_path):
    path = tmp_path / "us.dcm"
    make_burned_in(path, ["Name: PLANTFAMILY", "ID: 77123"])
    ds = dcmread(path)
    text_frame = ds.pixel_array
    blank = np.full_like(text_frame, 60)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    ds.NumberOfFrames = 4
    ds.PixelData = np.stack([blank, text_frame, blank, text_frame]).tobytes()
    ds.save_as(path, enforce_file_format=True)
    outs = []
    for threads in (1, 2):
        cleaner = PixelCleaner(PixelPolicy(), DETECTOR, prefilter=Prefilter(), threads=threads)
        d = dcmread(path)
        outcome = cleaner.process(d, set())
        assert outcome.action == "masked" and outcome.frames == 4
        assert outcome.with_text == 2 and outcome.scanned == 2  # blank frames: pre-filter only
        outs.append(d.pixel_array)
    assert (outs[0] == outs[1]).all()


def _pair(tmp_path, masked_rows: slice):
    """An original with one line of white text on dark, and an output masked over some rows."""
    path = tmp_path / "o.dcm"
    make_burned_in(path, ["PLANTFAMILY"], font_size=20, seed=4)
    orig = dcmread(path)
    out = dcmread(path)
    arr = out.pixel_array.copy()
    arr[masked_rows, 10:250] = 0
    out.PixelData = arr.tobytes()
    return orig, out


def test_the_stricter_measure_counts_a_box_masked_only_when_its_text_no_longer_stands_out(
    tmp_path,
):
    box = [(24, 23, 150, 40)]
    whole = PixelScore()
    orig, out = _pair(tmp_path, slice(15, 50))
    score_pair(orig, out, box, whole)
    assert whole.boxes == 1 and whole.masked_strict == 1
    half = PixelScore()
    orig, out = _pair(tmp_path, slice(15, 31))  # the lower half of the letters still shows
    score_pair(orig, out, box, half)
    assert half.boxes == 1 and half.masked_strict == 0 and half.missed_strict
    assert "stricter measure" in half.report()


class _Blob:
    """A detector that finds one region shaped like no line of text."""

    name = "blob"

    def available(self) -> bool:
        return True

    def detect(self, image):
        return [(40.0, 40.0, 140.0, 150.0)]


@pytest.mark.parametrize(("policy", "held"), [("mask", False), ("hold", True)])
def test_the_policy_decides_on_a_region_ocr_cannot_decide_on(tmp_path, monkeypatch, policy, held):
    from bridge.deid.pixels import clean
    from bridge.domain.errors import DeidError

    monkeypatch.setattr(clean, "_reader", lambda: lambda crop: "unsure")
    path = tmp_path / "us.dcm"
    make_burned_in(path, [])
    cleaner = PixelCleaner(PixelPolicy(unsure=policy), _Blob())
    ds = dcmread(path)
    if held:
        with pytest.raises(DeidError, match="possible burned-in text"):
            cleaner.process(ds, set())
        return
    outcome = cleaner.process(ds, set())
    assert outcome.action == "masked" and outcome.unsure == 1 and outcome.regions == 1
    monkeypatch.setattr(clean, "_reader", lambda: lambda crop: "none")
    outcome = cleaner.process(dcmread(path), set())
    assert outcome.action == "clean" and outcome.rejected == 1


class _Nothing:
    """A detector that finds no text at all."""

    name = "nothing"

    def available(self) -> bool:
        return True

    def detect(self, image):
        return []


@needs_ocr
def test_the_headers_identity_read_anywhere_in_the_frame_is_masked_whatever_the_detector_said(
    tmp_path,
):
    from bridge.deid.scrub import identifying_tokens

    path = tmp_path / "us.dcm"
    boxes = make_burned_in(path, ["PLANTEDFAMILY PLANTEDGIVEN", "Scanner room 4"], font_size=22)
    ds = dcmread(path)
    before = ds.pixel_array.copy()
    outcome = PixelCleaner(PixelPolicy(), _Nothing()).process(ds, identifying_tokens(ds))
    assert outcome.action == "masked" and outcome.identity_added >= 1
    after = ds.pixel_array
    x0, y0, x1, y1 = boxes[0]
    glyphs = before[y0:y1, x0:x1] == 255
    assert (after[y0:y1, x0:x1][glyphs] != 255).mean() > 0.9  # the name is gone
    x0, y0, x1, y1 = boxes[1]
    assert (after[y0:y1, x0:x1] == before[y0:y1, x0:x1]).all()  # other text: the detector's job
    # switched off: nothing the detector did not find is masked
    ds = dcmread(path)
    off = PixelCleaner(PixelPolicy(identity_ocr=False), _Nothing()).process(ds, set())
    assert off.action == "clean"


@needs_detector
def test_the_detector_model_is_loaded_once_per_process():
    from bridge.config import Settings
    from bridge.deid.build import make_pixel_cleaner

    cleaner = make_pixel_cleaner(Settings().deid.pixels)
    assert cleaner.prefilter is not None and cleaner.refine is not None
    sessions = {
        id(d._load())  # type: ignore[attr-defined]
        for d in (cleaner.detector, cleaner.refine, cleaner.prefilter.detector)
    }
    assert len(sessions) == 1


def test_a_line_region_is_brought_to_its_ink_and_two_lines_are_split():
    """Issue #14, false masking: the detector's box reaches far above and below the glyphs,
    and two close lines come as one region, leaving the short line's empty end inside. The
    mask follows the ink rows of each line; no glyph pixel is left."""
    from bridge.deid.pixels.regions import fit_lines

    image = np.full((120, 400), 40, np.uint8)
    _text(image, (20, 30), "Institution Name: General Hospital", 14)
    _text(image, (20, 52), "Sex: F", 14)
    region = (10.0, 15.0, 330.0, 85.0)  # both lines, with a generous margin
    fitted = fit_lines(region, image)
    assert len(fitted) == 2
    glyphs = image > 128
    covered = np.zeros_like(glyphs)
    for x0, y0, x1, y1 in fitted:
        covered[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = True
    assert covered[glyphs].all()
    area = sum((b[2] - b[0]) * (b[3] - b[1]) for b in fitted)
    assert area < 0.5 * (region[2] - region[0]) * (region[3] - region[1])
    assert fitted[1][2] < 150  # the short line's box ends near its last letter
