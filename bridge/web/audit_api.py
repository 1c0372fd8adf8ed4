"""``GET /api/v1/audit`` (token role ``admin``): the audit trail, as JSON or as DICOM Audit
Messages."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from bridge.config import Settings
from bridge.peers.syslog import to_dicom_xml
from bridge.store import audit
from bridge.store.repo import Store


def audit_router(settings: Settings, store: Store, auth: Any) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["audit"], dependencies=[Depends(auth)])

    @router.get("/audit", response_model=None)
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
