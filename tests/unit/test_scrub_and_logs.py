"""Question scrubbing and the log redaction processor."""

from __future__ import annotations

import io
import json
import logging

from bridge.deid.scrub import identifying_tokens, scrub_text
from bridge.domain.errors import DeidError
from bridge.logging import configure, get_logger
from bridge.sample import make_study


def test_question_scrubbed_of_dataset_identity(tmp_path):
    from pydicom import dcmread

    ds = dcmread(make_study(tmp_path, 1, rows=8, columns=8).paths[0])
    q = "Compare with outside MRI of PLANTEDFAMILY Plantedgiven born 1961-04-17, MRN PID-7734521, tel +1 555 019 9321"
    out = scrub_text(q, identifying_tokens(ds))
    for bad in ("PLANTEDFAMILY", "Plantedgiven", "1961", "PID-7734521", "555"):
        assert bad.lower() not in out.lower()
    assert out.startswith("Compare with outside MRI of")


def test_redaction_processor_masks_identifying_keys_and_library_messages():
    stream = io.StringIO()
    configure("json", "info", stream=stream)
    log = get_logger("t")
    log.info("x", patient_name="DOE^JANE", case_id="c1")
    try:
        raise ValueError("Invalid value 'DOE^JANE'")
    except ValueError:
        log.error("y", exc_info=True)
    try:
        raise DeidError("instance lacks a required UID", attribute="SOPInstanceUID")
    except DeidError:
        log.error("z", exc_info=True)
    logging.getLogger("pynetdicom").debug("dataset dump DOE^JANE")
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    text = stream.getvalue()
    assert "DOE" not in text
    assert lines[0]["case_id"] == "c1" and lines[0]["patient_name"] == "[redacted]"
    assert lines[1]["error_type"] == "ValueError"
    assert "SOPInstanceUID" in lines[2]["error"]


def test_identifying_tokens_the_same_whether_elements_were_decoded_or_not():
    """The tokens are read from raw values without decoding them into the dataset (so that an
    element the engine keeps is written as it came); the answer must be pydicom's."""
    import warnings
    from pathlib import Path

    import pydicom
    from pydicom import dcmread

    from conftest import CORPUS, VALIDATION

    warnings.simplefilter("ignore")
    roots = [Path(pydicom.__file__).parent / "data" / "test_files", CORPUS, VALIDATION]
    compared = 0
    for path in sorted(p for root in roots if root.is_dir() for p in root.rglob("*")):
        try:
            raw, decoded = dcmread(path), dcmread(path)
            for _ in decoded.iterall():  # decodes every element, sequences included
                pass
        except Exception:  # noqa: BLE001, S112 - not DICOM, or not decodable at all
            continue
        assert identifying_tokens(raw) == identifying_tokens(decoded), path.name
        compared += 1
    assert compared > 100


def test_identity_inside_a_sequence_encoded_as_un_is_scrubbed_from_the_question(tmp_path):
    """A sender that does not know Other Patient IDs Sequence forwards it as UN: the other ID in
    it is still identity, found like any other (and so removed from free text the bridge
    carries out)."""
    from pydicom import dcmread
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    from bridge.dicom import set_file_meta

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4"
    ds.PatientID = "PID-1"
    other = Dataset()
    other.PatientID = "OTHERMRN-4471"
    ds.OtherPatientIDsSequence = Sequence([other])
    set_file_meta(ds, ExplicitVRLittleEndian)
    path = tmp_path / "un.dcm"
    ds.save_as(path, enforce_file_format=True)
    tag_and_vr = b"\x10\x00\x02\x10SQ"  # (0010,1002) SQ: the same layout as UN
    data = path.read_bytes()
    assert data.count(tag_and_vr) == 1
    path.write_bytes(data.replace(tag_and_vr, b"\x10\x00\x02\x10UN"))
    read = dcmread(path)
    assert read.get_item(0x00101002).VR == "UN"
    tokens = identifying_tokens(read)
    assert "OTHERMRN-4471" in tokens
    assert "OTHERMRN-4471" not in scrub_text("compare with OTHERMRN-4471 last year", tokens)


def test_the_same_text_is_scrubbed_of_each_datasets_own_identity():
    # (texts are scrubbed once per set of identifying tokens: the answer for one patient must
    # never be reused for another)
    text = "Follow-up of QXZMEYER lesion, compare KWOLSKI"
    assert (
        scrub_text(text, frozenset({"QXZMEYER"}))
        == "Follow-up of [removed] lesion, compare KWOLSKI"
    )
    assert (
        scrub_text(text, frozenset({"KWOLSKI"}))
        == "Follow-up of QXZMEYER lesion, compare [removed]"
    )
    assert scrub_text(text, ["QXZMEYER"]) == "Follow-up of [removed] lesion, compare KWOLSKI"
    long = " ".join([text] * 20)  # (a report-length text: scrubbed each time)
    assert scrub_text(long, {"KWOLSKI"}).count("[removed]") == 20
