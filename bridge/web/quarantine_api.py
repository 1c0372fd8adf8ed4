"""``/api/v1/quarantine``: what is held, with its reason (token role ``read``); retry, release
or discard an instance or a report (role ``admin``, audited with the token's actor)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from bridge.domain.errors import SubmitError
from bridge.pipeline.quarantine import act_on_instance, act_on_report
from bridge.store import audit, quarantine
from bridge.store.repo import Store
from bridge.store.spool import Spool
from bridge.web.errors import http_error
from bridge.web.tokens import Tokens


def quarantine_router(store: Store, spool: Spool, tokens: Tokens) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["quarantine"])
    admin = [Depends(tokens.need("admin"))]

    @router.get("/quarantine", dependencies=[Depends(tokens.need("read"))])
    def held() -> dict[str, list[dict[str, Any]]]:
        return quarantine.held(store)

    @router.post("/quarantine/instances/{instance_id}/{action}", dependencies=admin)
    def instance_action(request: Request, instance_id: int, action: str) -> dict[str, Any]:
        try:
            case_id = act_on_instance(store, spool, instance_id, action)
        except SubmitError as exc:
            raise http_error(exc, context=False) from None
        audit.record(
            store, request.state.actor, f"instance.{action}", case_id=case_id, instance=instance_id
        )
        return {"instance": instance_id, "case_id": case_id, "action": action}

    @router.post("/quarantine/reports/{report_id}/{action}", dependencies=admin)
    def report_action(request: Request, report_id: int, action: str) -> dict[str, Any]:
        try:
            case_id = act_on_report(store, report_id, action)
        except SubmitError as exc:
            raise http_error(exc, context=False) from None
        audit.record(
            store, request.state.actor, f"report.{action}", case_id=case_id, report=report_id
        )
        return {"report": report_id, "case_id": case_id, "action": action}

    return router
