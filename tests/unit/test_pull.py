"""Pure parts of pulling: the streaming multipart reader, query values, submission checks."""

from __future__ import annotations

import itertools
from datetime import date
from pathlib import Path

import pytest

from bridge.config import Settings
from bridge.domain.errors import Kind, PacsUnavailableError, SubmitError
from bridge.peers.multipart import boundary_of, split_parts
from bridge.peers.pacs import StudyQuery
from bridge.peers.pacs_dimse import _retrieve_failure
from bridge.pipeline.submit import Submission, validate


def _body(boundary: bytes, parts: list[bytes], close: bool = True) -> bytes:
    out = b"preamble to ignore\r\n"
    for p in parts:
        out += b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
    if close:
        out += b"--" + boundary + b"--\r\n"
    return out


def _files(tmp_path: Path):
    for i in itertools.count():
        yield tmp_path / f"part{i}.dcm"


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_parts_are_written_whole_whatever_the_chunking(tmp_path, chunk):
    boundary = b"b0und4ry"
    # Bodies that contain near-misses of the delimiter and CRLFs.
    parts = [b"DICM" + bytes(range(256)) * 10, b"\r\n--b0und4r" + b"x" * 5000, b""]
    body = _body(boundary, parts)
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    got = list(split_parts(chunks, boundary, _files(tmp_path)))
    assert [p.read_bytes() for p in got] == parts


def test_a_body_cut_short_keeps_the_whole_parts_and_drops_the_partial_one(tmp_path):
    boundary = b"XyZ"
    body = _body(boundary, [b"first", b"second-part-cut"], close=False)[:-12]
    seen = []
    with pytest.raises(PacsUnavailableError, match="closed the multipart body early"):
        for p in split_parts([body], boundary, _files(tmp_path)):
            seen.append(p.read_bytes())
    assert seen == [b"first"]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["part0.dcm"]


def test_boundary_of_content_type():
    ct = 'multipart/related; type="application/dicom"; boundary="abc-123"'
    assert boundary_of(ct) == b"abc-123"
    assert boundary_of("multipart/related; boundary=xyz; type=application/dicom") == b"xyz"
    with pytest.raises(PacsUnavailableError):
        boundary_of("application/dicom")


def test_study_date_range_values():
    assert StudyQuery().study_date() == ""
    assert StudyQuery(date_from=date(2024, 1, 2)).study_date() == "20240102-"
    assert StudyQuery(date_to=date(2024, 1, 2)).study_date() == "-20240102"
    d = date(2024, 5, 6)
    assert StudyQuery(date_from=d, date_to=d).study_date() == "20240506"


def test_submissions_are_checked_before_the_pacs_is_asked():
    settings = Settings(_env_file=None)
    ok = Submission(question="Surgery?", study_uid="1.2.3")
    validate(settings.submit, ok)
    cases = [
        (Submission(question=" ", study_uid="1.2.3"), "question is empty"),
        (Submission(question="q" * 2001, study_uid="1.2.3"), "longer than 2000"),
        (Submission(question="q", study_uid="1.2.3", subspecialty="dermatology"), "subspecialty"),
        (Submission(question="q", study_uid="1.2.3", priority="now"), "priority"),
        (Submission(question="q"), "Study Instance UID or an accession"),
        (
            Submission(question="q", study_uid="1.2.3", original_report="r" * 20001),
            "report is longer",
        ),
    ]
    for sub, message in cases:
        with pytest.raises(SubmitError, match=message) as info:
            validate(settings.submit, sub)
        assert info.value.kind is Kind.INVALID


def test_retrieve_failures_name_the_setting_to_change():
    assert "BRIDGE_PACS__MOVE_DESTINATION" in str(_retrieve_failure(0xA801, "SO"))
    assert "move destination SO" in str(_retrieve_failure(0xC000, "SO"))
    assert "move destination" not in str(_retrieve_failure(0xC000, None))
    assert isinstance(_retrieve_failure(0xA702, "SO"), PacsUnavailableError)


def _study(uid: str, day: str, pid: str = "P-1", issuer: str = "", birth: str = "", sex: str = ""):
    from pydicom.dataset import Dataset

    from bridge.peers.pacs import StudyMatch

    ds = Dataset()
    ds.StudyInstanceUID = uid
    ds.StudyDate = day
    ds.StudyTime = "120000"
    ds.PatientID = pid
    ds.IssuerOfPatientID = issuer
    ds.PatientBirthDate = birth
    ds.PatientSex = sex
    ds.ModalitiesInStudy = "MR"
    return StudyMatch(uid, ds)


class _Pacs:
    protocol = "dicomweb"

    def __init__(self, studies):
        self.studies = studies

    def search(self, query):
        return [s for s in self.studies if s.text("PatientID") == query.patient_id]


def test_a_prior_is_the_same_patient_never_the_same_patient_id_alone():
    """Issue #15, 5: exact Patient ID + issuer where both studies have an issuer; where either
    has none, Patient ID + birth date + sex, all present on both; otherwise not sent."""
    from bridge.pipeline.submit import find_priors

    settings = Settings(_env_file=None)
    main = _study("1.1", "20240101", issuer="HOSP-A", birth="19610417", sex="F")
    others = [
        _study("2.1", "20230101", issuer="HOSP-A"),  # same issuer: the same patient
        _study("2.2", "20230102", issuer="HOSP-B", birth="19610417", sex="F"),  # other issuer
        _study("2.3", "20230103", birth="19900101", sex="F"),  # no issuer, other birth date
        _study("2.4", "20230104", birth="19610417", sex="F"),  # no issuer, same birth and sex
        _study("2.5", "20230105", birth="19610417"),  # no issuer, no sex: not confirmed
        _study("2.6", "20230106", birth="19610417", sex="M"),  # no issuer, other sex
    ]
    found = find_priors(settings.submit, _Pacs([main, *others]), main, 10)
    assert {p.match.study_uid: p.matched_by for p in found.priors} == {
        "2.1": "patient_id+issuer",
        "2.4": "patient_id+birth_date+sex",
    }
    assert found.unmatched == 4  # 2.2, 2.3, 2.5, 2.6: same Patient ID, patient not confirmed
    # The main study without an issuer: only birth date and sex can confirm, on every candidate.
    bare = _study("1.1", "20240101", birth="19610417", sex="F")
    found = find_priors(settings.submit, _Pacs([bare, *others]), bare, 10)
    assert {p.match.study_uid: p.matched_by for p in found.priors} == {
        "2.2": "patient_id+birth_date+sex",
        "2.4": "patient_id+birth_date+sex",
    }
    # ... and with neither birth date nor sex on it, nothing is sent as a prior.
    blank = _study("1.1", "20240101")
    found = find_priors(settings.submit, _Pacs([blank, *others]), blank, 10)
    assert found.priors == [] and found.unmatched == 6
