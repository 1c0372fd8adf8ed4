"""Accepting findings JSON: check the case and the key images, build the SR, queue its return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom import dcmread

from bridge.config import Settings
from bridge.errors import FindingsError
from bridge.findings.schema import Findings, Status
from bridge.findings.sr import Evidence, KeyImageRef, SectionCodes, build_report
from bridge.ingest.spool import REPORTS, Spool
from bridge.logging import get_logger
from bridge.store.repo import Store
from bridge.store.schema import CaseState

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
    store: Store, spool: Spool, settings: Settings, case_id: str, findings: Findings
) -> Accepted:
    case = store.get_case(case_id)
    if case is None:
        raise FindingsError("no such case", status=404)
    if case["state"] not in ACCEPTING:
        raise FindingsError(
            "the case has not been forwarded yet", status=409, case_state=case["state"]
        )
    headers = store.vault_headers(case_id)
    if headers is None:
        raise FindingsError("the case has no original headers in the vault", status=409)

    rows = store.case_rows(case_id)
    by_pseudo: dict[str, Any] = {r.pseudo_sop_uid: r for r in rows if r.pseudo_sop_uid}
    unknown = [
        k.sop_instance_uid for k in findings.key_images if k.sop_instance_uid not in by_pseudo
    ]
    if unknown:
        raise FindingsError(
            "key_images reference instances this case does not have",
            status=422,
            sop_instance_uids=",".join(unknown),
        )
    evidence = [
        Evidence(r.sop_class_uid, r.sop_instance_uid, r.series_uid)
        for r in rows
        if r.pseudo_sop_uid
    ]
    key_images = [
        KeyImageRef(
            Evidence(
                by_pseudo[k.sop_instance_uid].sop_class_uid,
                by_pseudo[k.sop_instance_uid].sop_instance_uid,
                by_pseudo[k.sop_instance_uid].series_uid,
            ),
            k.frame,
            k.note,
        )
        for k in findings.key_images
    ]
    earlier = store.reports_of(case_id)
    previous = []
    if findings.status == Status.AMENDED:
        built = [r for r in earlier if r["source"] == "findings"]
        if not built:
            raise FindingsError("an amendment needs an earlier report of this case", status=409)
        previous = [dcmread(spool.path(REPORTS, built[-1]["file_name"]))]
    sr = build_report(
        findings=findings,
        headers=headers,
        evidence=evidence,
        key_images=key_images,
        case_id=case_id,
        number=len(earlier) + 1,
        section_codes=SectionCodes(settings.findings.section_codes),
        previous=previous,
    )
    tmp = spool.new_tmp()
    sr.save_as(tmp, enforce_file_format=True)
    name = spool.commit_tmp(tmp, REPORTS)
    report_id = store.add_report(
        case_id,
        source="findings",
        status=findings.status.value,
        sop_class_uid=str(sr.SOPClassUID),
        sop_instance_uid=str(sr.SOPInstanceUID),
        series_instance_uid=str(sr.SeriesInstanceUID),
        file_name=name,
    )
    log.info("findings.accepted", case_id=case_id, report=report_id, status=findings.status.value)
    return Accepted(report_id, case_id, str(sr.SOPInstanceUID), str(sr.SeriesInstanceUID))
