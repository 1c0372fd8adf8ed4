"""Before a report goes into the hospital PACS, the very file sent is checked (issue #15, 1)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from bridge.domain.errors import ReturnSafetyError
from bridge.findings.verify import verify_file

TARGET = {
    "study_uid": "1.2.3.4",
    "patient_id": "PID-1",
    "issuer": "HOSP",
    "sop_instance_uid": "2.25.99",
}


def _file(tmp_path, **values) -> object:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    ds.StudyInstanceUID = values.get("study", "1.2.3.4")
    ds.PatientID = values.get("patient", "PID-1")
    if values.get("issuer", "HOSP"):
        ds.IssuerOfPatientID = values.get("issuer", "HOSP")
    ds.SOPInstanceUID = values.get("sop", "2.25.99")
    path = tmp_path / "r.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_the_reidentified_object_checked_passes(tmp_path):
    verify_file(_file(tmp_path), **TARGET)


@pytest.mark.parametrize(
    "change",
    [
        {"study": "2.25.111"},  # the pseudonymized study: a reader object never re-identified
        {"patient": "SO-ABCDEF"},  # the pseudonymous patient
        {"issuer": ""},  # the issuer dropped
        {"issuer": "OTHER"},
        {"sop": "2.25.100"},  # another object than the report checked
    ],
)
def test_any_difference_holds_the_report(tmp_path, change):
    with pytest.raises(ReturnSafetyError, match="not the re-identified object"):
        verify_file(_file(tmp_path, **change), **TARGET)


def test_an_unreadable_file_holds_the_report(tmp_path):
    path = tmp_path / "r.dcm"
    path.write_bytes(b"not dicom")
    with pytest.raises(ReturnSafetyError, match="cannot be read"):
        verify_file(path, **TARGET)
