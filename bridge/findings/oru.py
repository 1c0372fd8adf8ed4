"""A returned report as an HL7 v2.5.1 ORU^R01 for the hospital's EHR or RIS.

Pure: from the report file (the very SR stored in the original study, re-identified and checked)
and the original study's headers from the vault to the message text. The text of the findings,
the impression, the recommendations and the agreement comes from the SR's content tree, so a
report the reader made as an SR goes out the same way as one built from JSON findings.

    MSH  ... ORU^R01^ORU_R01, control ID fixed per report (a resend is recognisably the same)
    PID  the original patient: ID^^^issuer, name, birth date, sex
    ORC  RE, placer and filler order numbers of the original order
    OBR  18748-4^Diagnostic Imaging Report^LN, study date, result status F / P / C
    OBX  TX per section: 18782-3 findings, 19005-8 impression, 18783-1 recommendations,
         AGREEMENT (local code) the agreement with the original report; first, SUMMARY (local
         code) the summary for the patient with the agreement in plain words, when given
    OBX  the SR itself: ST, its SOP Instance UID; and RP, a WADO-RS URL of the SR in the
         hospital PACS, when configured

Text is escaped (``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``); a text's lines are the repetitions of its TX
field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from pydicom.dataset import Dataset

from bridge.domain.vocabulary import AGREEMENT_TEXT

#: Report status (reports.status) -> OBR-25 / OBX-11 result status.
RESULT_STATUS = {"final": "F", "preliminary": "P", "amended": "C"}

REPORT_CODE = "18748-4^Diagnostic Imaging Report^LN"
FINDINGS = "18782-3^Radiology Study observation (narrative)^LN"
IMPRESSION = "19005-8^Radiology Impression (narrative)^LN"
RECOMMENDATION = "18783-1^Radiology Study recommendation (narrative)^LN"
AGREEMENT = "AGREEMENT^Agreement with the original report^L"
SUMMARY = "SUMMARY^Summary for the patient^L"
SR_UID = "SR^Structured report SOP Instance UID^L"
SR_URL = "SRURL^Structured report WADO-RS URL^L"

#: Section headings and item names of TID 2000 (DCM and LOINC) -> the OBX they go to.
_SECTIONS = {
    "121070": "findings",
    "121071": "findings",
    "18782-3": "findings",
    "121072": "impression",
    "121073": "impression",
    "19005-8": "impression",
    "121074": "recommendations",
    "121075": "recommendations",
    "18783-1": "recommendations",
    "121111": "summary",
}
_AGREEMENTS = frozenset(AGREEMENT_TEXT.values())


@dataclass(frozen=True)
class Endpoints:
    """MSH-3..6 and MSH-11, and where the SR can be fetched (``wado_rs_url``: the hospital
    PACS's DICOMweb root as the EHR reaches it; empty: the SR is named by its UID only)."""

    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    processing_id: str = "P"
    wado_rs_url: str = ""


#: Key Object Selection: returned with the SR, not a report of its own.
_KOS = "1.2.840.10008.5.1.4.1.1.88.59"


def carries_report(sop_class_uid: str) -> bool:
    """An ORU goes for the SRs of a case (built from findings or made by the reader), not for
    the KOS or the PDF rendering returned beside them."""
    return sop_class_uid.startswith("1.2.840.10008.5.1.4.1.1.88.") and sop_class_uid != _KOS


def control_id(report_sop_uid: str) -> str:
    """MSH-10 (20 characters in v2.5.1), the same for every attempt at the same report: a
    receiver that got the message but whose ACK was lost sees the resend as a duplicate."""
    return "SO" + hashlib.sha256(report_sop_uid.encode()).hexdigest()[:18].upper()


def escape(text: str) -> str:
    out = text.replace("\\", "\\E\\")
    for ch, esc in (("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\")):
        out = out.replace(ch, esc)
    return "".join(c if c.isprintable() else " " for c in out)


def _ts(when: datetime) -> str:
    return when.strftime("%Y%m%d%H%M%S") + when.strftime("%z")


def _dicom_ts(date: object, time: object) -> str:
    d = str(date or "").strip()
    t = str(time or "").strip().split(".")[0]
    return (d + t)[:14] if len(d) == 8 and d.isdigit() else ""


def _name(pn: object) -> str:
    """DICOM PN family^given^middle^prefix^suffix -> XPN family^given^middle^suffix^prefix."""
    parts = (str(pn or "").split("=")[0].split("^") + [""] * 5)[:5]
    family, given, middle, prefix, suffix = (escape(p.strip()) for p in parts)
    return "^".join([family, given, middle, suffix, prefix]).rstrip("^")


def _order_number(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if not value:
        for item in ds.get("RequestAttributesSequence", []) or []:
            value = item.get(keyword)
            if value:
                break
    return escape(str(value or "").strip())


def texts(sr: Dataset) -> dict[str, list[str]]:
    """The SR's TEXT items by section: findings, impression, recommendations, agreement (the
    bridge's own agreement sentence, found among the impressions). Text outside any known
    section counts as findings."""
    out: dict[str, list[str]] = {
        "findings": [],
        "impression": [],
        "recommendations": [],
        "agreement": [],
        "summary": [],
    }
    for section, value in _walk(sr.get("ContentSequence", []) or [], "findings"):
        value = value.strip()
        if not value:
            continue
        out["agreement" if value in _AGREEMENTS else section].append(value)
    return out


#: Relationships whose TEXT is context (the observer's organisation), not the report.
_CONTEXT = frozenset({"HAS OBS CONTEXT", "HAS CONCEPT MOD", "HAS ACQ CONTEXT"})


def _walk(items: Iterable[Dataset], section: str) -> Iterator[tuple[str, str]]:
    for item in items:
        if item.get("RelationshipType") in _CONTEXT:
            continue
        code = ""
        names = item.get("ConceptNameCodeSequence") or []
        if names:
            code = str(names[0].get("CodeValue", ""))
        here = _SECTIONS.get(code, section)
        if item.get("ValueType") == "TEXT":
            yield here, str(item.get("TextValue", ""))
        yield from _walk(item.get("ContentSequence", []) or [], here)


def _observer(sr: Dataset) -> str:
    """OBR-32 (NDL, its name as CNN subcomponents): the verifying observer, else the author."""
    for seq in ("VerifyingObserverSequence", "AuthorObserverSequence"):
        for item in sr.get(seq, []) or []:
            name = item.get("VerifyingObserverName") or item.get("PersonName")
            if name:
                parts = (str(name).split("^") + [""])[:2]
                return "&" + "&".join(escape(p.strip()) for p in parts)
    for item in sr.get("ContentSequence", []) or []:
        if item.get("ValueType") == "PNAME" and item.get("PersonName"):
            parts = (str(item.PersonName).split("^") + [""])[:2]
            return "&" + "&".join(escape(p.strip()) for p in parts)
    return ""


def build_oru(
    sr: Dataset,
    original: Dataset,
    status: str,
    ends: Endpoints,
    now: datetime,
) -> str:
    """The ORU^R01 for report ``sr`` of the study described by ``original`` (vault headers),
    segments separated by CR."""
    result = RESULT_STATUS.get(status, "F")
    issuer = escape(str(original.get("IssuerOfPatientID", "") or ""))
    pid3 = escape(str(original.get("PatientID", "") or "")) + (f"^^^{issuer}" if issuer else "")
    study_uid = str(original.get("StudyInstanceUID", "") or sr.get("StudyInstanceUID", ""))
    accession = escape(str(original.get("AccessionNumber", "") or "").strip())
    placer = _order_number(original, "PlacerOrderNumberImagingServiceRequest")
    filler = _order_number(original, "FillerOrderNumberImagingServiceRequest")
    filler = filler or accession or study_uid
    sex = str(original.get("PatientSex", "") or "").strip().upper()
    msh = [
        "MSH",
        "^~\\&",
        escape(ends.sending_application),
        escape(ends.sending_facility),
        escape(ends.receiving_application),
        escape(ends.receiving_facility),
        _ts(now),
        "",
        "ORU^R01^ORU_R01",
        control_id(str(sr.SOPInstanceUID)),
        ends.processing_id,
        "2.5.1",
        "",
        "",
        "AL",
        "NE",
        "",
        "UNICODE UTF-8",
    ]
    pid = [
        "PID",
        "1",
        "",
        pid3,
        "",
        _name(original.get("PatientName")),
        "",
        str(original.get("PatientBirthDate", "") or "")[:8],
        sex if sex in ("M", "F", "O") else "U",
    ]
    orc = ["ORC", "RE", placer, filler, "", "CM"]
    obr = ["OBR", "1", placer, filler, REPORT_CODE]
    obr += [""] * 2 + [_dicom_ts(original.get("StudyDate"), original.get("StudyTime"))]
    obr += [""] * 10 + [accession]  # OBR-18 placer field 1: the accession number
    obr += ["", "", "", _ts(now), "", "RAD", result]  # OBR-22, 24, 25
    obr += [""] * 6 + [_observer(sr)]  # OBR-32 principal result interpreter
    segments = ["|".join(msh), "|".join(pid), "|".join(orc), "|".join(_trim(obr))]
    sections = texts(sr)
    observed = _dicom_ts(sr.get("ContentDate"), sr.get("ContentTime"))
    n = 0
    for key, code in (
        ("summary", SUMMARY),
        ("findings", FINDINGS),
        ("impression", IMPRESSION),
        ("recommendations", RECOMMENDATION),
        ("agreement", AGREEMENT),
    ):
        lines = [ln for t in sections[key] for ln in t.splitlines() if ln.strip()]
        if not lines:
            continue
        n += 1
        value = "~".join(escape(ln) for ln in lines)
        segments.append(_obx(n, "TX", code, value, result, observed))
    sop = str(sr.SOPInstanceUID)
    n += 1
    segments.append(_obx(n, "ST", SR_UID, sop, result, observed))
    if ends.wado_rs_url:
        url = (
            f"{ends.wado_rs_url.rstrip('/')}/studies/{study_uid}"
            f"/series/{sr.SeriesInstanceUID}/instances/{sop}"
        )
        app = escape(ends.sending_application)
        pointer = f"{escape(url)}^{app}^application^dicom"
        segments.append(_obx(n + 1, "RP", SR_URL, pointer, result, observed))
    return "\r".join(segments) + "\r"


def _obx(n: int, vtype: str, code: str, value: str, result: str, observed: str) -> str:
    return "|".join(
        _trim(["OBX", str(n), vtype, code, "", value, "", "", "", "", "", result, "", "", observed])
    )


def _trim(fields: list[str]) -> list[str]:
    while fields and not fields[-1]:
        fields.pop()
    return fields


def validate(er7: str) -> str:
    """Empty when ``er7`` is a valid v2.5.1 ORU^R01 (hl7apy's strict validation), else what is
    wrong: the structure and the fields' names, never their values."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.exceptions import HL7apyException, ValidationError
    from hl7apy.parser import parse_message

    # v2.5.1 gives a reference pointer (RP.1) 199 characters, which a WADO-RS URL with three
    # UIDs outgrows (v2.7 dropped such lengths; receivers take longer pointers): its length
    # alone is not checked.
    segments = []
    for seg in er7.split("\r"):
        fields = seg.split("|")
        if fields[0] == "OBX" and len(fields) > 5 and fields[2] == "RP":
            fields[5] = "URL^" + fields[5].partition("^")[2]
        segments.append("|".join(fields))
    try:
        msg = parse_message(
            "\r".join(segments),
            validation_level=VALIDATION_LEVEL.STRICT,
            find_groups=True,
            force_validation=True,
        )
        msg.validate()
    except ValidationError as exc:  # names the structure, e.g. a missing segment
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    except HL7apyException as exc:  # others quote the offending value: a name, an ID...
        return type(exc).__name__
    except Exception as exc:  # noqa: BLE001 - the parser raises plain errors on broken input
        return f"not an HL7 message ({type(exc).__name__})"
    return ""
