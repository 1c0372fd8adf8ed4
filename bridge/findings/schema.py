"""The findings a reading platform posts: ``POST /api/v1/cases/{case_id}/findings``."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.domain.vocabulary import AGREEMENT_PLAIN, AGREEMENT_TEXT, Agreement, Status

__all__ = ["AGREEMENT_PLAIN", "AGREEMENT_TEXT", "Agreement", "Findings", "Status"]

MAX_TEXT = 64 * 1024
#: A summary for the patient is a few plain sentences, not a second report.
MAX_SUMMARY = 4096


class Reader(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=64,
        description='DICOM PN form ("Family^Given") or "Given Family"',
        examples=["Lee^Ana"],
    )
    organization: str = Field(min_length=1, max_length=64, examples=["Neuro Reading Group"])
    id: str | None = Field(None, max_length=64, description="the reader's id at the platform")

    @property
    def dicom_name(self) -> str:
        n = self.name.strip()
        if "^" in n:
            return n
        parts = n.split()
        if len(parts) >= 2:
            return f"{parts[-1]}^{' '.join(parts[:-1])}"
        return n


class KeyImage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sop_instance_uid: str = Field(
        pattern=r"^[0-9]+(\.[0-9]+)*$",
        max_length=64,
        description="SOP Instance UID as the reader saw it (pseudonymized)",
    )
    frame: int | None = Field(None, ge=1)
    note: str | None = Field(None, max_length=1024)


class Findings(BaseModel):
    """A second opinion. At least one of findings, impression, recommendations is not empty."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "reader": {"name": "Lee^Ana", "organization": "Neuro Reading Group"},
                    "status": "final",
                    "findings": "8 mm enhancing lesion in the left frontal lobe.",
                    "impression": "Findings favour a low-grade glioma.",
                    "recommendations": "MR spectroscopy; neurosurgical review.",
                    "patient_summary": (
                        "A small spot was seen in the front of the brain. It is most likely a "
                        "slow-growing tumour. More scans and a visit to a brain surgeon are "
                        "advised."
                    ),
                    "agreement": "minor_discrepancy",
                    "key_images": [{"sop_instance_uid": "2.25.1234", "note": "lesion"}],
                    "signed_at": "2026-11-28T10:15:00Z",
                }
            ]
        },
    )

    reader: Reader
    status: Status
    findings: str = Field("", max_length=MAX_TEXT)
    impression: str = Field("", max_length=MAX_TEXT)
    recommendations: str = Field("", max_length=MAX_TEXT)
    #: In plain language, for the patient and the treating physician: shown first in the PDF
    #: and the EHR result, in its own section of the SR.
    patient_summary: str = Field(
        "",
        max_length=MAX_SUMMARY,
        description="plain-language summary for the patient (at most 4,096 characters)",
    )
    agreement: Agreement = Agreement.NOT_ASSESSED
    key_images: list[KeyImage] = Field(default_factory=list, max_length=1000)
    signed_at: datetime
    #: For ``POST /api/v1/findings``: the case addressed by its pseudonymized Study Instance UID.
    study_instance_uid: str | None = Field(None, pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=64)

    @field_validator("signed_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("signed_at needs a UTC offset (e.g. 2026-11-28T10:15:00Z)")
        return v

    @model_validator(mode="after")
    def _some_text(self) -> Findings:
        if not (self.findings.strip() or self.impression.strip() or self.recommendations.strip()):
            raise ValueError("findings, impression and recommendations are all empty")
        return self
