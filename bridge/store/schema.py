"""Tables of the state store. Times are UNIX epoch seconds (float), identical on every engine.

The vault tables (``vault_patients``, ``vault_headers``, ``uid_map``) hold identifying data
and the means to map back; nothing in them ever leaves the bridge.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from bridge.domain.states import OPEN_CASE_STATES

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


cases = Table(
    "cases",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("state", String(24), nullable=False, index=True),
    Column("original_study_uid", String(64), nullable=False, index=True),
    Column("pseudo_study_uid", String(64), nullable=True, index=True),
    Column("pseudo_patient_id", String(64), nullable=True),
    Column("source", String(16), nullable=False),
    Column("calling_aet", String(16), nullable=True),
    Column("called_aet", String(16), nullable=True),
    Column("subspecialty", String(16), nullable=False),
    Column("priority", String(16), nullable=False),
    Column("question", Text, nullable=False, default=""),
    Column("modalities", String(64), nullable=False, default=""),
    Column("body_part", String(64), nullable=False, default=""),
    Column("error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("last_received_at", Float, nullable=False),
    Column("completed_at", Float, nullable=True),
    Column("forwarded_at", Float, nullable=True),
    #: Bumped each time the case reaches "forwarded"; a manifest job is queued per version.
    Column("manifest_version", Integer, nullable=False, default=0),
    #: Submitted cases: the instance count the PACS reported for the study (progress).
    Column("expected_instances", Integer, nullable=True),
    #: Submitted with priors: earlier studies with the same Patient ID not sent because the
    #: patient could not be confirmed (another issuer, or birth date or sex not matching).
    Column("priors_unmatched", Integer, nullable=True),
    #: With submit.free_text_review: who approved the question and report to leave, and when
    #: (None: not reviewed; the manifest waits).
    Column("text_reviewed_by", String(64), nullable=True),
    Column("text_reviewed_at", Float, nullable=True),
    #: Submitted cases: the referring report, scrubbed of the patient's identifiers.
    Column("original_report", Text, nullable=True),
    #: Who submitted the case (API token holder, console user, CLI user); None for pushes.
    Column("submitted_by", String(64), nullable=True),
    #: When the case was first reported past its due time (turnaround.*_hours): alerted once.
    Column("due_alerted_at", Float, nullable=True),
)

#: At most one open case per study, whichever node or process opens it: the database refuses a
#: second (two listeners of a scaled-out bridge receiving the same new study at once).
OPEN_CASE_WHERE = "state IN ({})".format(", ".join(f"'{s.value}'" for s in OPEN_CASE_STATES))
Index(
    "uq_cases_open_study",
    cases.c.original_study_uid,
    unique=True,
    sqlite_where=text(OPEN_CASE_WHERE),
    postgresql_where=text(OPEN_CASE_WHERE),
)

instances = Table(
    "instances",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("case_id", String(32), ForeignKey("cases.id"), nullable=False, index=True),
    Column("sop_instance_uid", String(64), nullable=False),
    Column("sop_class_uid", String(64), nullable=False),
    #: The original study (a case may hold priors besides its own study).
    Column("study_uid", String(64), nullable=True),
    Column("series_uid", String(64), nullable=False, default=""),
    Column("modality", String(16), nullable=False, default=""),
    Column("pseudo_sop_uid", String(64), nullable=True, index=True),
    Column("pseudo_series_uid", String(64), nullable=True),
    #: Number of Frames of the original (None: not a multi-frame object).
    Column("frames", Integer, nullable=True),
    #: The burned-in text scan: frames the full detector read (the pre-filter passed the others
    #: as text-free), frames where text was masked, regions masked (None: not scanned).
    Column("px_scanned", Integer, nullable=True),
    Column("px_text", Integer, nullable=True),
    Column("px_regions", Integer, nullable=True),
    Column("state", String(16), nullable=False),
    Column("size_bytes", BigInteger, nullable=False, default=0),
    Column("spool_name", String(64), nullable=True),
    Column("deid_name", String(64), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False, default=0.0),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", Float, nullable=True),
    Column("error", Text, nullable=True),
    #: An operator reviewed the pixels of an instance held for possible burned-in text and
    #: released it: de-identified without the pixel scan.
    Column("released", Integer, nullable=False, default=0),
    Column("received_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("forwarded_at", Float, nullable=True),
    UniqueConstraint("case_id", "sop_instance_uid", name="uq_instances_case_sop"),
    Index("ix_instances_state_next", "state", "next_attempt_at"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("case_id", String(32), ForeignKey("cases.id"), nullable=True, index=True),
    Column("payload", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False, default=0.0),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", Float, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("done_at", Float, nullable=True),
    Index("ix_jobs_state_next", "state", "next_attempt_at"),
)

vault_patients = Table(
    "vault_patients",
    metadata,
    Column("pseudo_patient_id", String(64), primary_key=True),
    Column("patient_id", Text, nullable=False),
    Column("issuer", Text, nullable=False, default=""),
    Column("patient_name", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
)

vault_headers = Table(
    "vault_headers",
    metadata,
    Column("case_id", String(32), ForeignKey("cases.id"), primary_key=True),
    #: Original patient and study modules as DICOM JSON, for re-identifying returned reports.
    Column("headers", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

uid_map = Table(
    "uid_map",
    metadata,
    #: Keyed by case: pseudonyms are deterministic, so a study sent in two cases (again, or
    #: first as a prior) has the same pseudonymized UIDs in both, each case with its own map.
    Column("case_id", String(32), ForeignKey("cases.id"), primary_key=True, index=True),
    Column("pseudo_uid", String(64), primary_key=True),
    Column("original_uid", String(64), nullable=False),
)

reports = Table(
    "reports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("case_id", String(32), ForeignKey("cases.id"), nullable=False, index=True),
    #: Where it came from: "findings" (JSON built into an SR), "archive" (polled), "stow".
    Column("source", String(16), nullable=False),
    Column("status", String(16), nullable=False),  # preliminary | final | amended
    Column("sop_class_uid", String(64), nullable=False),
    Column("sop_instance_uid", String(64), nullable=False, unique=True),
    Column("series_instance_uid", String(64), nullable=False),
    #: For objects made by the reader: their UID on the reading side (not re-imported twice).
    Column("source_uid", String(64), nullable=True, index=True),
    Column("state", String(16), nullable=False, index=True),
    Column("file_name", String(80), nullable=False),
    Column("error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("returned_at", Float, nullable=True),
)

workitems = Table(
    "workitems",
    metadata,
    #: The reading worklist (UPS-RS): one Unified Procedure Step per forwarded case.
    Column("uid", String(64), primary_key=True),
    Column("case_id", String(32), ForeignKey("cases.id"), nullable=False, unique=True),
    Column("state", String(16), nullable=False, index=True),
    #: SHA-256 of the claiming performer's Transaction UID (never returned to anyone).
    Column("transaction_hash", String(64), nullable=True),
    #: The API token that claimed it, and when.
    Column("performer", String(64), nullable=True),
    Column("claimed_at", Float, nullable=True),
    #: When it became COMPLETED or CANCELED; a cancellation's reason as the reader gave it.
    Column("ended_at", Float, nullable=True),
    Column("cancel_reason", Text, nullable=True),
    #: A cancellation requested while IN PROGRESS: by which token, when, why.
    Column("cancel_requested_by", String(64), nullable=True),
    Column("cancel_requested_at", Float, nullable=True),
    Column("cancel_request_reason", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

feed_positions = Table(
    "feed_positions",
    metadata,
    #: Which feed: "orthanc:<url>" for an Orthanc change feed.
    Column("name", String(200), primary_key=True),
    #: The last change processed (Orthanc's Seq); changes after it are still to do.
    Column("last_seq", BigInteger, nullable=False),
    #: One follower at a time across workers and nodes.
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", Float, nullable=True),
    Column("updated_at", Float, nullable=False),
)

case_studies = Table(
    "case_studies",
    metadata,
    #: The studies a case sends: its own ("primary") and the patient's earlier ones ("prior").
    Column("case_id", String(32), ForeignKey("cases.id"), primary_key=True),
    Column("study_uid", String(64), primary_key=True),
    Column("role", String(8), nullable=False),
    Column("pseudo_study_uid", String(64), nullable=True),
    #: How a prior was found to be the same patient's: "patient_id+issuer" or, where either
    #: study has no issuer, "patient_id+birth_date+sex" (never on the Patient ID alone).
    Column("matched_by", String(32), nullable=True),
    Index("ix_case_studies_study_uid", "study_uid"),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    #: argon2id (``$argon2id$v=19$m=…,t=…,p=…$salt$hash``); older rows: ``scrypt$N$r$p$salt$hash``.
    Column("password_hash", String(255), nullable=False),
    Column("role", String(16), nullable=False),  # admin | submitter | viewer
    Column("disabled", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    #: SHA-256 of the cookie's random token (the token itself is never stored).
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False, index=True),
    #: Who: a console user name, "api", "cli", "watch", "system".
    Column("actor", String(64), nullable=False),
    #: What, e.g. "sign-in", "case.submitted", "case.viewed", "instance.released".
    Column("action", String(48), nullable=False, index=True),
    Column("outcome", String(16), nullable=False, default="success"),
    Column("case_id", String(32), nullable=True, index=True),
    #: Details without identifying values: pseudonymous ids, counts, reasons, peer addresses.
    Column("detail", Text, nullable=False, default="{}"),
    Column("source_address", String(64), nullable=True),
)
