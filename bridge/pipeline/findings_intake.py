"""Accepting findings JSON: check the case and the key images, build the SR, queue its return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from bridge.config import FindingsSettings
from bridge.domain.errors import FindingsError, Kind
from bridge.domain.states import CaseState
from bridge.findings.reidentify import reidentify, returned_uid
from bridge.findings.schema import Findings, Status
from bridge.logging import get_logger
from bridge.store import report_files
from bridge.store.repo import Store
from bridge.store.spool import REPORTS, Spool

if TYPE_CHECKING:
    from bridge.findings.sr import Evidence

log = get_logger(__name__)

#: Findings are accepted once the reader has the whole study.
ACCEPTING = (CaseState.FORWARDED, CaseState.FINDINGS_RECEIVED, CaseState.RETURNED)


@dataclass(frozen=True)
class Accepted:
    report_id: int
    case_id: str
    sop_instance_uid: str
    series_instance_uid: str


def accept_findings(
    store: Store, spool: Spool, options: FindingsSettings, case_id: str, findings: Findings
) -> Accepted:
    # imported here: the SR and PDF builders (highdicom, fpdf, Pillow) cost every process that
    # never builds a report ~0.5 s at start-up and their memory (issue #17)
    from bridge.findings.sr import (
        BASIC_TEXT_SR,
        ENHANCED_SR,
        Evidence,
        KeyImageRef,
        SectionCodes,
        build_key_object_selection,
        build_report,
    )

    case = store.cases.get(case_id)
    if case is None:
        raise FindingsError("no such case", kind=Kind.NOT_FOUND)
    if case["state"] not in ACCEPTING:
        raise FindingsError(
            "the case has not been forwarded yet", kind=Kind.CONFLICT, case_state=case["state"]
        )
    headers = store.vault.headers(case_id)
    if headers is None:
        raise FindingsError("the case has no original headers in the vault", kind=Kind.CONFLICT)

    rows = store.instances.of_case(case_id)
    by_pseudo: dict[str, Any] = {r.pseudo_sop_uid: r for r in rows if r.pseudo_sop_uid}
    unknown = [
        k.sop_instance_uid for k in findings.key_images if k.sop_instance_uid not in by_pseudo
    ]
    if unknown:
        raise FindingsError(
            "key_images reference instances this case does not have",
            kind=Kind.INVALID,
            sop_instance_uids=",".join(unknown),
        )
    for k in findings.key_images:
        frames = by_pseudo[k.sop_instance_uid].frames
        if k.frame is not None and k.frame > (frames or 1):
            raise FindingsError(
                "key_images frame is beyond the instance's frames",
                kind=Kind.INVALID,
                sop_instance_uid=k.sop_instance_uid,
                frames=frames or 1,
            )
    # The original UIDs come from the vault (the state store keeps only references to them).
    originals = store.vault.uid_map(case_id)

    def evidence_of(r: Any) -> Evidence:
        sop, series = originals.get(r.pseudo_sop_uid), originals.get(r.pseudo_series_uid or "")
        if not sop or not series:
            raise FindingsError(
                "the vault has no original UIDs for an instance", kind=Kind.CONFLICT
            )
        return Evidence(r.sop_class_uid, sop, series)

    evidence = [evidence_of(r) for r in rows if r.pseudo_sop_uid]
    key_images = [
        KeyImageRef(
            evidence_of(by_pseudo[k.sop_instance_uid]),
            # A frame of a single-frame image is the image itself (and may not be referenced).
            k.frame if by_pseudo[k.sop_instance_uid].frames else None,
            k.note,
        )
        for k in findings.key_images
    ]
    earlier = store.reports.of_case(case_id)
    previous = []
    if findings.status == Status.AMENDED:
        built = [
            r
            for r in earlier
            if r["source"] == "findings" and r["sop_class_uid"] in (ENHANCED_SR, BASIC_TEXT_SR)
        ]
        if not built:
            raise FindingsError(
                "an amendment needs an earlier report of this case", kind=Kind.CONFLICT
            )
        previous = [_predecessor(built[-1], str(headers_ds(headers).StudyInstanceUID))]
    sr = build_report(
        findings=findings,
        headers=headers,
        evidence=evidence,
        key_images=key_images,
        case_id=case_id,
        number=len(earlier) + 1,
        section_codes=SectionCodes(options.section_codes),
        previous=previous,
        basic_text=options.sr_kind == "basic_text",
    )
    objects = [sr]
    if key_images and options.key_object_selection:
        objects.append(
            build_key_object_selection(
                findings=findings,
                headers=headers,
                key_images=key_images,
                case_id=case_id,
                number=len(earlier) + 1,
            )
        )
    if options.pdf:
        from bridge.findings.pdf import build_pdf_document

        objects.append(
            build_pdf_document(
                findings=findings, headers=headers, case_id=case_id, number=len(earlier) + 1
            )
        )
    report_id = 0
    for obj in objects:
        name = report_files.save(store, spool, obj)
        rid = store.reports.add(
            case_id,
            source="findings",
            status=findings.status.value,
            sop_class_uid=str(obj.SOPClassUID),
            sop_instance_uid=str(obj.SOPInstanceUID),
            series_instance_uid=str(obj.SeriesInstanceUID),
            file_name=name,
        )
        report_id = report_id or rid
    log.info("findings.accepted", case_id=case_id, report=report_id, status=findings.status.value)
    return Accepted(report_id, case_id, str(sr.SOPInstanceUID), str(sr.SeriesInstanceUID))


def _status_of(ds: Dataset) -> str:
    if str(ds.get("PreliminaryFlag", "")) == "PRELIMINARY":
        return Status.PRELIMINARY.value
    if "VerificationFlag" in ds and str(ds.VerificationFlag) != "VERIFIED":
        return Status.PRELIMINARY.value
    if "PredecessorDocumentsSequence" in ds:
        return Status.AMENDED.value
    return Status.FINAL.value


def accept_object(store: Store, spool: Spool, ds: Dataset, source: str) -> Accepted:
    """Take in an SR / KOS / PDF the reader made in the pseudonymized study.

    Raises :class:`FindingsError` (404 unknown study, 422 unsupported or unknown references);
    with ``source="archive"`` a refused object is also recorded as a held report, so that an
    operator sees it and it is not fetched again.
    """
    reader_uid = str(ds.get("SOPInstanceUID", ""))
    case = store.cases.by_pseudo_study(str(ds.get("StudyInstanceUID", "")))
    if case is None:
        raise FindingsError(
            "the object belongs to a study the bridge never forwarded", kind=Kind.NOT_FOUND
        )
    headers = store.vault.headers(case["id"])
    if headers is None:
        raise FindingsError("the case has no original headers in the vault", kind=Kind.CONFLICT)
    try:
        out = _reidentified(store, case["id"], ds, headers)
    except FindingsError as exc:
        if source == "archive":
            name = report_files.save(store, spool, ds, enforce_file_format=False)
            store.reports.add(
                case["id"],
                source=source,
                status="final",
                sop_class_uid=str(ds.get("SOPClassUID", "")),
                sop_instance_uid=returned_uid("held", reader_uid),
                series_instance_uid="",
                file_name=name,
                source_uid=reader_uid,
                held_reason=str(exc),
            )
            log.error("report.held", case_id=case["id"], reason=exc.message)
        raise
    existing = store.reports.by_sop(str(out.SOPInstanceUID))
    if existing is not None:  # the same object again: already taken in
        return Accepted(
            existing["id"],
            case["id"],
            existing["sop_instance_uid"],
            existing["series_instance_uid"],
        )
    name = report_files.save(store, spool, out)
    report_id = store.reports.add(
        case["id"],
        source=source,
        status=_status_of(out),
        sop_class_uid=str(out.SOPClassUID),
        sop_instance_uid=str(out.SOPInstanceUID),
        series_instance_uid=str(out.SeriesInstanceUID),
        file_name=name,
        source_uid=reader_uid,
    )
    log.info("object.accepted", case_id=case["id"], report=report_id, source=source)
    return Accepted(report_id, case["id"], str(out.SOPInstanceUID), str(out.SeriesInstanceUID))


def reidentify_held(store: Store, spool: Spool, report: dict[str, Any]) -> dict[str, Any]:
    """A reader object held at intake keeps the reader's pseudonymized file: before it may go
    to the PACS, re-identification runs again (the vault may now have what was missing). Returns
    the report as it now is; raises :class:`FindingsError` when it still cannot be re-identified.
    A report whose file is already re-identified is returned unchanged."""
    ds = report_files.load(store, spool, report["file_name"])
    case = store.cases.get(report["case_id"])
    if case is None or str(ds.get("StudyInstanceUID", "")) != case.get("pseudo_study_uid"):
        return report
    headers = store.vault.headers(report["case_id"])
    if headers is None:
        raise FindingsError("the case has no original headers in the vault", kind=Kind.CONFLICT)
    out = _reidentified(store, report["case_id"], ds, headers)
    name = report_files.save(store, spool, out)
    store.reports.replace_object(
        report["id"],
        file_name=name,
        sop_instance_uid=str(out.SOPInstanceUID),
        series_instance_uid=str(out.SeriesInstanceUID),
        status=_status_of(out),
    )
    spool.remove(REPORTS, report["file_name"])
    log.info("report.reidentified", case_id=report["case_id"], report=report["id"])
    updated = store.reports.get(report["id"])
    return updated if updated is not None else report


def _reidentified(store: Store, case_id: str, ds: Dataset, headers: dict[str, Any]) -> Dataset:
    """The reader's object mapped back through the case's vault (its own UIDs are new ones)."""
    own = {str(ds.get("SOPInstanceUID", "")), str(ds.get("SeriesInstanceUID", ""))}
    return reidentify(ds, uid_map=store.vault.uid_map(case_id), vault_headers=headers, own_uids=own)


def headers_ds(headers: dict[str, Any]) -> Dataset:
    return Dataset.from_json(headers)


def _predecessor(report: dict[str, Any], study_uid: str) -> Dataset:
    """What an amendment's Predecessor Documents Sequence needs of the earlier report (its
    UIDs, from the state store: its file may be gone after the retention period)."""
    ds = Dataset()
    ds.SOPClassUID = report["sop_class_uid"]
    ds.SOPInstanceUID = report["sop_instance_uid"]
    ds.SeriesInstanceUID = report["series_instance_uid"]
    ds.StudyInstanceUID = study_uid
    return ds
