"""The ORU^R01 a returned report becomes (issue #18), checked with hl7apy's v2.5.1 validator,
and the MLLP client against hl7apy's own MLLP server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from pydicom import dcmread
from pydicom.dataset import Dataset

from bridge.deid.engine import Deidentifier
from bridge.deid.profile import build_profile
from bridge.deid.pseudonyms import Pseudonymizer
from bridge.domain.errors import PermanentForwardError, TransientForwardError
from bridge.findings.oru import Endpoints, build_oru, control_id, escape, texts, validate
from bridge.findings.schema import Findings
from bridge.findings.sr import Evidence, KeyImageRef, build_report
from bridge.peers.mllp import MllpClient, parse_ack
from bridge.sample import make_study
from tests.support.hl7 import MllpReceiver
from tests.support.orthanc import free_port

ENDS = Endpoints("SECONDOPINION", "GENERAL", "RIS", "GENERAL")
NOW = datetime(2026, 12, 3, 10, 15, tzinfo=UTC)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    study = make_study(tmp_path_factory.mktemp("oru"), 2, rows=8, columns=8)
    engine = Deidentifier(build_profile(), Pseudonymizer(b"k" * 32), "t")
    headers = engine.deidentify_file(study.paths[0]).vault_headers
    d = dcmread(study.paths[0])
    evidence = [Evidence(str(d.SOPClassUID), str(d.SOPInstanceUID), str(d.SeriesInstanceUID))]
    findings = Findings.model_validate(
        {
            "reader": {"name": "Ana Lee", "organization": "Neuro Reading Group"},
            "status": "amended",
            "findings": "8 mm lesion | left frontal lobe.\nNo mass effect ^ & ~ \\ done.",
            "impression": "Low-grade glioma.",
            "recommendations": "MR spectroscopy.",
            "agreement": "major_discrepancy",
            "key_images": [],
            "signed_at": "2026-11-28T10:15:00Z",
        }
    )
    sr = build_report(
        findings=findings,
        headers=headers,
        evidence=evidence,
        key_images=[KeyImageRef(evidence[0], None, None)],
        case_id="c",
        number=1,
    )
    return sr, Dataset.from_json(headers)


def test_the_oru_validates_and_carries_the_original_patient_order_and_text(report):
    sr, original = report
    original.AccessionNumber = "ACC-77"
    original.PlacerOrderNumberImagingServiceRequest = "PL-1"
    er7 = build_oru(sr, original, "amended", ENDS, NOW)
    msg = parse_message(
        er7, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True, force_validation=True
    )
    assert msg.validate()
    assert validate(er7) == ""
    seg = {s.split("|")[0]: s.split("|") for s in er7.split("\r") if s}
    assert seg["MSH"][9] == control_id(str(sr.SOPInstanceUID)) and len(seg["MSH"][9]) == 20
    assert seg["MSH"][11] == "2.5.1" and seg["MSH"][8] == "ORU^R01^ORU_R01"
    assert seg["PID"][3] == f"{original.PatientID}^^^{original.IssuerOfPatientID}"
    assert seg["PID"][5].split("^")[:2] == str(original.PatientName).split("^")[:2]
    assert seg["ORC"][2] == "PL-1" and seg["ORC"][3] == "ACC-77"
    assert seg["OBR"][18] == "ACC-77" and seg["OBR"][25] == "C"
    obx = [s.split("|") for s in er7.split("\r") if s.startswith("OBX")]
    by_code = {o[3].split("^")[0]: o for o in obx}
    findings = by_code["18782-3"][5].split("~")
    assert findings == [
        "8 mm lesion \\F\\ left frontal lobe.",
        "No mass effect \\S\\ \\T\\ \\R\\ \\E\\ done.",
    ]
    assert by_code["19005-8"][5] == "Low-grade glioma."
    assert by_code["18783-1"][5] == "MR spectroscopy."
    assert "Major discrepancy" in by_code["AGREEMENT"][5]
    assert all(o[11] == "C" for o in obx)
    assert by_code["SR"][2] == "ST" and by_code["SR"][5] == str(sr.SOPInstanceUID)


def test_a_wado_url_makes_the_sr_pointer_a_reference_pointer(report):
    sr, original = report
    ends = Endpoints("SECONDOPINION", "GENERAL", "RIS", "GENERAL", wado_rs_url="https://pacs/wado")
    er7 = build_oru(sr, original, "final", ends, NOW)
    assert validate(er7) == ""
    rp = next(s.split("|") for s in er7.split("\r") if s.startswith("OBX") and "|RP|" in s)
    pointer = rp[5].split("^")
    assert pointer[0] == (
        f"https://pacs/wado/studies/{original.StudyInstanceUID}"
        f"/series/{sr.SeriesInstanceUID}/instances/{sr.SOPInstanceUID}"
    )
    assert pointer[2:] == ["application", "dicom"]
    # with no accession and no order numbers the order is the study
    orc = next(s.split("|") for s in er7.split("\r") if s.startswith("ORC"))
    assert orc[3] == str(original.StudyInstanceUID) or orc[3] == original.get("AccessionNumber")


def test_texts_of_a_reader_made_sr_without_sections():
    sr = Dataset()
    item = Dataset()
    item.ValueType = "TEXT"
    item.TextValue = "Free text from the reader."
    sr.ContentSequence = [item]
    assert texts(sr)["findings"] == ["Free text from the reader."]


def test_escape_keeps_text_in_its_field():
    assert escape("a|b^c&d~e\\f\x07") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f "


def test_validate_names_what_is_wrong():
    no_obr = (
        "MSH|^~\\&|A|B|C|D|20261203||ORU^R01^ORU_R01|1|P|2.5.1\rPID|||1^^^H||D^J\r"
        "OBX|1|TX|18782-3^Y^LN||a||||||F\r"
    )
    assert "OBR" in validate(no_obr)
    assert validate("PID|1\r") != ""
    # a value too long for its field is named by the error, never quoted (it may be a name)
    long_name = (
        "MSH|^~\\&|A|B|C|D|20261203||ORU^R01^ORU_R01|1|P|2.5.1\rPID|||1^^^H||"
        + "PLANTEDNAME" * 30
        + "^J\rOBR|1|||18748-4^X^LN\r"
    )
    problem = validate(long_name)
    assert problem and "PLANTEDNAME" not in problem


# -- the MLLP client against hl7apy's MLLP server --------------------------------------------


def test_mllp_accepted_refused_and_unreachable(report):
    sr, original = report
    er7 = build_oru(sr, original, "final", ENDS, NOW)
    ctrl = control_id(str(sr.SOPInstanceUID))
    ok = MllpReceiver("AA")
    try:
        ack = MllpClient("127.0.0.1", ok.port, 10).send(er7, ctrl)
        assert ack.code == "AA" and ack.control_id == ctrl
        assert ok.received and ok.received[0].startswith("MSH|")
    finally:
        ok.stop()
    refused = MllpReceiver("AE", "Unknown order")
    try:
        with pytest.raises(PermanentForwardError) as exc:
            MllpClient("127.0.0.1", refused.port, 10).send(er7, ctrl)
        assert exc.value.context["ack"] == "AE"
        assert exc.value.context["reason"] == "Unknown order"
        with pytest.raises(TransientForwardError, match="another message"):
            MllpClient("127.0.0.1", refused.port, 10).send(er7, "OTHER")
    finally:
        refused.stop()
    port = free_port()
    with pytest.raises(TransientForwardError, match="unreachable"):
        MllpClient("127.0.0.1", port, 2).send(er7, ctrl)


def test_parse_ack_reads_err_when_msa_has_no_text():
    ack = parse_ack(b"MSH|^~\\&|R|F|S|F|2026||ACK|1|P|2.5.1\rMSA|AR|X\rERR||||E||||Bad PID\r")
    assert (ack.code, ack.control_id, ack.text) == ("AR", "X", "Bad PID")
    with pytest.raises(TransientForwardError):
        parse_ack(b"hello")


def test_mllp_over_tls_verifies_the_receiver_and_shows_the_bridges_certificate(report, tmp_path):
    import ssl

    from bridge.tls import client_context
    from tests.support.certs import issue, make_ca

    sr, original = report
    er7 = build_oru(sr, original, "final", ENDS, NOW)
    ctrl = control_id(str(sr.SOPInstanceUID))
    ca = make_ca(tmp_path / "pki")
    ris_pair = issue(tmp_path / "pki", "ris", ca)
    bridge_pair = issue(tmp_path / "pki", "bridge", ca, server=False)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(ris_pair.cert, ris_pair.key)
    ctx.load_verify_locations(cafile=ca[0].cert)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ris = MllpReceiver("AA", tls=ctx)
    try:
        client = client_context(str(ca[0].cert), str(bridge_pair.cert), str(bridge_pair.key))
        ack = MllpClient("127.0.0.1", ris.port, 10, client).send(er7, ctrl)
        assert ack.code == "AA" and len(ris.received) == 1
        # a receiver the bridge's CA did not sign gets nothing
        other = make_ca(tmp_path / "other", "other-ca")
        with pytest.raises(TransientForwardError, match="unreachable"):
            MllpClient("127.0.0.1", ris.port, 10, client_context(str(other[0].cert))).send(
                er7, ctrl
            )
        assert len(ris.received) == 1
    finally:
        ris.stop()
