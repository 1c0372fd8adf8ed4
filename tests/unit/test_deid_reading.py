"""The "reading" profile: patient characteristics kept, dates shifted per patient, descriptions
cleaned of the dataset's own identifiers, every option recorded."""

from __future__ import annotations

from datetime import datetime, timedelta
from io import BytesIO

import pytest
from pydicom import dcmread

from bridge.deid.dates import shift_da, shift_dt
from bridge.deid.engine import Deidentifier
from bridge.deid.profile import build_profile
from bridge.deid.pseudonyms import Pseudonymizer
from bridge.sample import PlantedPatient, make_study
from tests.helpers import leaks

SECRET = b"reading-profile-secret-0123456789"


@pytest.fixture
def engine() -> Deidentifier:
    return Deidentifier(build_profile("reading"), Pseudonymizer(SECRET), "test")


def _out(engine, path):
    res = engine.deidentify_file(path)
    buf = BytesIO()
    res.dataset.save_as(buf, enforce_file_format=True)
    return res, dcmread(BytesIO(buf.getvalue()))


def _days(a: str, b: str) -> int:
    return (datetime.strptime(a, "%Y%m%d") - datetime.strptime(b, "%Y%m%d")).days


def test_reading_profile_keeps_what_a_reader_needs(tmp_path, engine):
    study = make_study(tmp_path / "a", 2, rows=8, columns=8)
    src = dcmread(study.paths[0])
    src.AcquisitionDateTime = "20240311101502.123+0100"
    src.save_as(study.paths[0], enforce_file_format=True)
    res, out = _out(engine, study.paths[0])
    offset = Pseudonymizer(SECRET).date_offset_days(res.pseudo_patient_id)
    assert -3651 <= offset <= -30
    assert _days(out.StudyDate, "20240311") == offset
    assert out.StudyTime == "101502"  # a whole-day shift leaves the time of day
    assert out.AcquisitionDateTime == shift_da("20240311", offset) + "101502.123+0100"
    assert (out.PatientAge, out.PatientSex, float(out.PatientWeight)) == ("062Y", "F", 71.5)
    assert out.PatientBirthDate == ""  # the table empties it; the age stays right
    assert out.StudyDescription == "CT HEAD for [removed]"
    assert out.SeriesDescription == "AX [removed] 5mm"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = [c.CodeValue for c in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113111", "113108", "113107", "113105", "113104", "113103"]
    # Times of day are not identity; an occupation is a descriptor the standard's Clean
    # Descriptors option keeps once it carries none of the dataset's identifiers.
    identity = study.identity
    assert leaks(out, identity) == []


def test_same_patient_same_shift_other_patient_other_shift(tmp_path, engine):
    a = make_study(tmp_path / "a", 1, rows=8, columns=8)
    b = make_study(tmp_path / "b", 1, rows=8, columns=8)  # same patient, a later visit
    ds = dcmread(b.paths[0])
    ds.StudyDate = "20240520"
    ds.save_as(b.paths[0], enforce_file_format=True)
    c = make_study(
        tmp_path / "c", 1, rows=8, columns=8, patient=PlantedPatient(patient_id="PID-OTHER-9")
    )
    _, oa = _out(engine, a.paths[0])
    _, ob = _out(engine, b.paths[0])
    _, oc = _out(engine, c.paths[0])
    assert _days(ob.StudyDate, oa.StudyDate) == _days("20240520", "20240311")  # interval kept
    assert oc.StudyDate != oa.StudyDate


def test_dates_that_cannot_be_shifted_are_removed(tmp_path, engine):
    study = make_study(tmp_path / "d", 1, rows=8, columns=8)
    ds = dcmread(study.paths[0])
    ds.SeriesDate = "2024"  # not a full date
    ds.save_as(study.paths[0], enforce_file_format=True)
    _, out = _out(engine, study.paths[0])
    assert "SeriesDate" not in out
    assert shift_dt("2024", -10) is None and shift_dt("20240311", -1) == "20240310"
    assert shift_da("20240301", -1) == "20240229"
    assert (datetime(2024, 3, 1) + timedelta(days=-1)).day == 29
