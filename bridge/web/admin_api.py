"""``/api/v1/quarantine`` (what is held, with its reason; retry / release / discard) and
``/api/v1/audit`` (the audit trail), for the API's token holder. Actions are audited as "api"."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from bridge.config import Settings
from bridge.domain.errors import SubmitError
from bridge.forward.audit_messages import to_dicom_xml
from bridge.ingest.spool import Spool
from bridge.store import audit, quarantine
from bridge.store.repo import Store
from bridge.store.submissions import review_free_text as review
from bridge.web.errors import http_error
from bridge.web.quarantine_ops import act_on_instance, act_on_report
from bridge.web.tokens import Tokens


class FreeTextReview(BaseModel):
    """The text as approved; a field left out keeps what the case has."""

    question: str | None = Field(None, max_length=100_000)
    original_report: str | None = Field(None, max_length=1_000_000)


def admin_router(settings: Settings, store: Store, spool: Spool, tokens: Tokens) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    admin = [Depends(tokens.need("admin"))]

    @router.get("/quarantine", tags=["quarantine"], dependencies=[Depends(tokens.need("read"))])
    def held() -> dict[str, list[dict[str, Any]]]:
        return quarantine.held(store)

    @router.post(
        "/quarantine/instances/{instance_id}/{action}", tags=["quarantine"], dependencies=admin
    )
    def instance_action(request: Request, instance_id: int, action: str) -> dict[str, Any]:
        try:
            case_id = act_on_instance(store, spool, instance_id, action)
        except SubmitError as exc:
            raise http_error(exc, context=False) from None
        audit.record(
            store, request.state.actor, f"instance.{action}", case_id=case_id, instance=instance_id
        )
        return {"instance": instance_id, "case_id": case_id, "action": action}

    @router.post(
        "/quarantine/reports/{report_id}/{action}", tags=["quarantine"], dependencies=admin
    )
    def report_action(request: Request, report_id: int, action: str) -> dict[str, Any]:
        try:
            case_id = act_on_report(store, report_id, action)
        except SubmitError as exc:
            raise http_error(exc, context=False) from None
        audit.record(
            store, request.state.actor, f"report.{action}", case_id=case_id, report=report_id
        )
        return {"report": report_id, "case_id": case_id, "action": action}

    @router.post("/cases/{case_id}/free-text", tags=["cases"], dependencies=admin)
    def review_free_text(request: Request, case_id: str, body: FreeTextReview) -> dict[str, Any]:
        """Approve the case's free text to leave (as it is, or with the text given), when
        ``submit.free_text_review`` holds it; its manifest goes at once."""
        case = store.get_case(case_id)
        if case is None:
            raise HTTPException(404, "no such case")
        question = case["question"] if body.question is None else body.question
        report = case["original_report"] if body.original_report is None else body.original_report
        try:
            review(store, case_id, request.state.actor, question or "", report or None)
        except SubmitError as exc:
            raise http_error(exc, context=False) from None
        audit.record(store, request.state.actor, "case.free_text_reviewed", case_id=case_id)
        return {"case_id": case_id, "reviewed": True}

    @router.get("/audit", tags=["audit"], response_model=None, dependencies=admin)
    def audit_events(
        case_id: str | None = None,
        action: str | None = None,
        since: float | None = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 200,
        format: Literal["json", "dicom"] = "json",  # noqa: A002
    ) -> list[dict[str, Any]] | Response:
        """The audit trail, newest first; ``format=dicom``: DICOM Audit Messages (PS3.15 A.5)
        in an ``<AuditMessages>`` element, oldest first."""
        events = audit.events(store, case_id=case_id, action=action, since=since, limit=limit)
        if format == "json":
            return events
        source = settings.audit.source_id or settings.dimse.ae_title
        body = "".join(to_dicom_xml(e, source) for e in reversed(events))
        return Response(
            f'<?xml version="1.0" encoding="UTF-8"?><AuditMessages>{body}</AuditMessages>',
            media_type="application/xml",
        )

    return router
