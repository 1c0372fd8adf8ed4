"""``POST /api/v1/cases/{case_id}/findings`` and ``POST /api/v1/findings``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel

from bridge.config import Settings
from bridge.domain.errors import FindingsError
from bridge.findings.schema import Findings
from bridge.pipeline.findings_intake import accept_findings
from bridge.store.repo import Store
from bridge.store.spool import Spool
from bridge.web.errors import http_error


class ReportAccepted(BaseModel):
    report_id: int
    case_id: str
    sop_instance_uid: str
    series_instance_uid: str
    state: str = "pending"


def findings_router(settings: Settings, store: Store, spool: Spool, auth: Any) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["findings"], dependencies=[Depends(auth)])

    def _accept(case_id: str, findings: Findings) -> ReportAccepted:
        try:
            a = accept_findings(store, spool, settings.findings, case_id, findings)
        except FindingsError as exc:
            raise http_error(exc) from None
        return ReportAccepted(
            report_id=a.report_id,
            case_id=a.case_id,
            sop_instance_uid=a.sop_instance_uid,
            series_instance_uid=a.series_instance_uid,
        )

    @router.post("/cases/{case_id}/findings", status_code=202)
    def post_case_findings(case_id: str, findings: Findings) -> ReportAccepted:
        """Findings for a case: built into a TID 2000 SR and stored into the original study."""
        return _accept(case_id, findings)

    @router.post("/findings", status_code=202)
    def post_findings(findings: Annotated[Findings, "with study_instance_uid"]) -> ReportAccepted:
        """Findings addressed by the pseudonymized Study Instance UID the reader saw."""
        if not findings.study_instance_uid:
            raise HTTPException(422, "study_instance_uid is required on /api/v1/findings")
        case = store.cases.by_pseudo_study(findings.study_instance_uid)
        if case is None:
            raise HTTPException(404, "no case has this pseudonymized Study Instance UID")
        return _accept(case["id"], findings)

    return router
