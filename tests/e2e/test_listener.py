"""The listener's answers to bad input, quotas, AE title checks and routing (pynetdicom as SCU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, Verification

from bridge.sample import make_study
from conftest import bridge_env
from tests.helpers import add_user
from tests.support.peers import acknowledged, storescu

pytestmark = pytest.mark.e2e


def _assoc(port: int, called: str = "SECONDOPINION", calling: str = "TESTSCU"):
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title=called)


def _store_file(port: int, path: Path) -> int:
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = _assoc(port)
        assert assoc.is_established
        status = assoc.send_c_store(path)
        assoc.release()
        return int(status.Status)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False


def _corrupt(src: Path, dst: Path, *, keep_meta_bytes: int) -> Path:
    raw = src.read_bytes()
    dst.write_bytes(raw[:keep_meta_bytes] + b"\xff\xff\x00\x00\x07\x00\xff\xff" * 16)
    return dst


def test_bad_datasets_get_precise_statuses(tmp_path, reading, make_bridge):
    bridge = make_bridge(bridge_env(reading, None))
    study = make_study(tmp_path / "s", 3, rows=32, columns=32)
    assoc = _assoc(bridge.dimse_port)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()

    # Undecodable dataset after a valid file meta: 0xC210 Cannot Understand.
    meta_len = 132 + 12 + dcmread(study.paths[0]).file_meta.FileMetaInformationGroupLength
    bad = _corrupt(study.paths[0], tmp_path / "bad.dcm", keep_meta_bytes=meta_len)
    assert _store_file(bridge.dimse_port, bad) == 0xC210

    # No Study Instance UID: 0xC210.
    ds = dcmread(study.paths[1])
    del ds.StudyInstanceUID
    ds.PatientBirthDate = "PLANTEDBADDATE"  # invalid DA: pydicom would quote it in a warning
    ds.save_as(tmp_path / "nostudy.dcm", enforce_file_format=True)
    assert _store_file(bridge.dimse_port, tmp_path / "nostudy.dcm") == 0xC210

    # A UID with path separators: refused, never used as a file name.
    ds = dcmread(study.paths[1])
    ds.StudyInstanceUID = "../../etc/passwd"
    ds.save_as(tmp_path / "evil.dcm", enforce_file_format=True)
    assert _store_file(bridge.dimse_port, tmp_path / "evil.dcm") == 0xC210

    # Dataset SOP Instance UID differs from the request's: 0xA900.
    ds = dcmread(study.paths[2])
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6.7"
    ds.save_as(tmp_path / "mismatch.dcm", enforce_file_format=False)
    assert _store_file(bridge.dimse_port, tmp_path / "mismatch.dcm") == 0xA900

    # Nothing of the refused objects was kept.
    spool = bridge.workdir / "data" / "spool"
    assert list((spool / "received").iterdir()) == []
    assert [f for f in (spool / "partial").rglob("*") if f.is_file()] == []
    assert bridge.api("/cases") == []
    # And a good one still goes through.
    assert _store_file(bridge.dimse_port, study.paths[0]) == 0x0000
    # No received value reached the log, not even through a library's warning.
    log = bridge.log()
    assert "store.missing_uid" in log
    assert "passwd" not in log and "PLANTEDBADDATE" not in log


def test_spool_quota_answers_out_of_resources(tmp_path, reading, make_bridge):
    bridge = make_bridge(
        bridge_env(
            reading,
            None,
            BRIDGE_SPOOL__QUOTA_BYTES="700000",
            BRIDGE_READING__DICOMWEB_URL="http://127.0.0.1:9/none",
        )
    )
    study = make_study(tmp_path / "q", 3)  # ~525 KB each
    assert _store_file(bridge.dimse_port, study.paths[0]) == 0x0000
    assert _store_file(bridge.dimse_port, study.paths[1]) == 0xA700
    spool = bridge.workdir / "data" / "spool"
    assert len(list((spool / "received").iterdir())) + len(list((spool / "deid").iterdir())) >= 1
    assert [f for f in (spool / "partial").rglob("*") if f.is_file()] == []
    (case,) = bridge.api("/cases")
    assert case["instances"]["total"] == 1


def test_calling_ae_allow_list_and_called_ae_routing(tmp_path, reading, make_bridge):
    routes = json.dumps(
        [
            {
                "ae_title": "SO_NEURO",
                "subspecialty": "neuro",
                "question": "Neuro second opinion",
                "priority": "urgent",
            }
        ]
    )
    bridge = make_bridge(
        bridge_env(
            reading,
            None,
            BRIDGE_DIMSE__ALLOWED_CALLING_AETS='["HOSPITALPACS"]',
            BRIDGE_DIMSE__ROUTES=routes,
        )
    )
    assoc = _assoc(bridge.dimse_port, calling="INTRUDER")
    assert assoc.is_rejected
    assoc = _assoc(bridge.dimse_port, called="NOT_SERVED", calling="HOSPITALPACS")
    assert assoc.is_rejected

    study = make_study(tmp_path / "n", 2, rows=32, columns=32)
    # strip the in-dataset question so the route's default applies
    for p in study.paths:
        ds = dcmread(p)
        del ds.RequestAttributesSequence
        del ds.RequestedProcedureDescription
        ds.save_as(p, enforce_file_format=True)
    out = storescu(bridge.dimse_port, study.paths, aet="SO_NEURO", calling="HOSPITALPACS")
    assert len(acknowledged(out.stdout)) == 2
    case = bridge.wait_forwarded(2)
    assert case["subspecialty"] == "neuro"
    assert case["priority"] == "urgent"
    assert case["question"] == "Neuro second opinion"
    assert case["called_ae_title"] == "SO_NEURO"


def test_encapsulated_pdf_is_held_in_quarantine(tmp_path, reading, make_bridge):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "PDFPLANTED^PATIENT"
    ds.PatientID = "PDF-1"
    ds.Modality = "DOC"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4 referral letter for PDFPLANTED, born 1961\n"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / "doc.dcm"
    ds.save_as(path, enforce_file_format=True)

    bridge = make_bridge(bridge_env(reading, None))
    assert len(acknowledged(storescu(bridge.dimse_port, [path]).stdout)) == 1
    case = bridge.wait_case(lambda c: c["state"] == "failed", timeout=60)
    assert case["instances"]["quarantined"] == 1 and case["instances"]["forwarded"] == 0
    assert "encapsulated document may contain identity" in bridge.log()
    assert "PDFPLANTED" not in bridge.log()


def test_a_full_spool_shows_in_metrics_and_console(tmp_path, reading, make_bridge):

    import requests

    bridge = make_bridge(
        bridge_env(
            reading,
            None,
            BRIDGE_SPOOL__MIN_FREE_BYTES=str(1 << 60),
            BRIDGE_HTTP__SECURE_COOKIES="false",
        )
    )
    study = make_study(tmp_path / "s", 1, rows=32, columns=32)
    out = storescu(bridge.dimse_port, study.paths, check=False)
    assert acknowledged(out.stdout) == [] and "Refused: OutOfResources" in out.stdout
    metrics = requests.get(f"{bridge.url}/metrics", timeout=10).text
    assert "bridge_spool_full 1.0" in metrics
    add_user(bridge, "ops", "ops-viewer-pass-123")
    s = requests.Session()
    s.post(
        f"{bridge.url}/login",
        data={"username": "ops", "password": "ops-viewer-pass-123"},
        timeout=30,
    )
    page = s.get(f"{bridge.url}/cases", timeout=30).text
    assert "Spool full (not enough free disk space for the spool)" in page
