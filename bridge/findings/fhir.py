"""A returned report as FHIR R4: a transaction Bundle of the Patient, the ImagingStudy and the
DiagnosticReport, for the hospital's FHIR server.

Pure, like the ORU (``findings/oru.py``): from the report SR (re-identified, the very file in the
PACS), the vault's headers of the original study and, when one was returned beside it, the PDF.

- Patient: found by its identifier (Patient ID, system from the issuer), created only if none
  matches (``ifNoneExist``).
- ImagingStudy: the ORIGINAL study (identifier ``urn:dicom:uid`` / ``urn:oid:<Study UID>``),
  created only if none matches; subject the Patient.
- DiagnosticReport: LOINC 18748-4, category RAD, status final / preliminary / amended, the
  conclusion (impression and the agreement), presentedForm: the PDF when there is one and the
  report as plain text (the summary for the patient first); identifier the SR's SOP Instance
  UID, created only if none matches: a resend after a lost answer creates nothing twice.

References inside the Bundle use ``urn:uuid:`` full URLs derived from the identifiers, so the same
report gives the same Bundle.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

from pydicom.dataset import Dataset

from bridge.findings.oru import texts

DICOM_UID = "urn:dicom:uid"
LOINC = "http://loinc.org"
#: RESULT_STATUS of the ORU, in FHIR's words.
STATUS = {"final": "final", "preliminary": "preliminary", "amended": "amended"}

_HEADINGS = (
    ("summary", "Summary for the patient"),
    ("findings", "Findings"),
    ("impression", "Impression"),
    ("recommendations", "Recommendations"),
    ("agreement", "Agreement with the original report"),
)


def patient_system(issuer: str) -> str:
    """The identifier system of a Patient ID: the issuer as an OID URN when it is an OID, else
    a URN naming the DICOM issuer (or set ``fhir.patient_system``)."""
    if issuer and all(p.isdigit() for p in issuer.split(".")) and "." in issuer:
        return f"urn:oid:{issuer}"
    return f"urn:dicom:issuer:{issuer or 'unknown'}"


def _full_url(kind: str, key: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'secondopinion:{kind}:{key}')}"


def _date(value: object) -> str | None:
    d = str(value or "").strip()
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else None


def _name(pn: object) -> list[dict[str, Any]]:
    parts = (str(pn or "").split("=")[0].split("^") + [""] * 5)[:5]
    family, given, middle, prefix, suffix = (p.strip() for p in parts)
    if not (family or given):
        return []
    name: dict[str, Any] = {"use": "official"}
    if family:
        name["family"] = family
    givens = [g for g in (given, middle) if g]
    if givens:
        name["given"] = givens
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    return [name]


def report_text(sr: Dataset) -> str:
    sections = texts(sr)
    blocks = [f"{title}\n" + "\n".join(sections[key]) for key, title in _HEADINGS if sections[key]]
    return "\n\n".join(blocks)


def build_bundle(
    sr: Dataset,
    original: Dataset,
    status: str,
    now: datetime,
    pdf: bytes | None = None,
    system: str = "",
) -> dict[str, Any]:
    """The transaction Bundle (as JSON) for report ``sr`` of the study in ``original``."""
    patient_id = str(original.get("PatientID", "") or "")
    system = system or patient_system(str(original.get("IssuerOfPatientID", "") or ""))
    study_uid = str(original.get("StudyInstanceUID", "") or sr.StudyInstanceUID)
    sop = str(sr.SOPInstanceUID)
    patient_url = _full_url("patient", f"{system}|{patient_id}")
    study_url = _full_url("study", study_uid)
    report_url = _full_url("report", sop)

    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": patient_id}],
    }
    if _name(original.get("PatientName")):
        patient["name"] = _name(original.get("PatientName"))
    birth = _date(original.get("PatientBirthDate"))
    if birth:
        patient["birthDate"] = birth
    sex = {"M": "male", "F": "female", "O": "other"}.get(
        str(original.get("PatientSex", "") or "").upper()
    )
    if sex:
        patient["gender"] = sex

    study: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "identifier": [{"system": DICOM_UID, "value": f"urn:oid:{study_uid}"}],
        "status": "available",
        "subject": {"reference": patient_url},
    }
    started = _date(original.get("StudyDate"))
    if started:
        study["started"] = started
    accession = str(original.get("AccessionNumber", "") or "").strip()
    if accession:
        study["identifier"].append(
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                            "code": "ACSN",
                        }
                    ]
                },
                "value": accession,
            }
        )
    description = str(original.get("StudyDescription", "") or "").strip()
    if description:
        study["description"] = description

    sections = texts(sr)
    conclusion = "\n".join(sections["impression"] + sections["agreement"])
    text = report_text(sr)
    forms: list[dict[str, Any]] = []
    if pdf:
        forms.append(
            {
                "contentType": "application/pdf",
                "language": "en-US",
                "data": base64.b64encode(pdf).decode("ascii"),
                "title": "Second opinion report",
            }
        )
    forms.append(
        {
            "contentType": "text/plain; charset=utf-8",
            "language": "en-US",
            "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
            "title": "Second opinion report (text)",
        }
    )
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": DICOM_UID, "value": f"urn:oid:{sop}"}],
        "status": STATUS.get(status, "final"),
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                        "code": "RAD",
                        "display": "Radiology",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}]
        },
        "subject": {"reference": patient_url},
        "issued": now.isoformat(timespec="seconds"),
        "imagingStudy": [{"reference": study_url}],
        "presentedForm": forms,
    }
    if started:
        report["effectiveDateTime"] = started
    if conclusion:
        report["conclusion"] = conclusion

    def entry(url: str, resource: dict[str, Any], match: str) -> dict[str, Any]:
        return {
            "fullUrl": url,
            "resource": resource,
            "request": {
                "method": "POST",
                "url": resource["resourceType"],
                "ifNoneExist": match,
            },
        }

    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            entry(patient_url, patient, f"identifier={system}|{patient_id}"),
            entry(study_url, study, f"identifier={DICOM_UID}|urn:oid:{study_uid}"),
            entry(report_url, report, f"identifier={DICOM_UID}|urn:oid:{sop}"),
        ],
    }
