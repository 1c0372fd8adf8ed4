"""Console pages that change things: quarantine actions, submitting, the audit trail.

Every action is a POST carrying the session's CSRF token, needs its role, and is audited.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bridge.config import Settings
from bridge.domain.errors import (
    BridgeError,
    ConfigError,
    PullError,
    SubmitError,
    WorklistError,
)
from bridge.pipeline.quarantine import act_on_instance, act_on_report
from bridge.store import audit, quarantine
from bridge.store.repo import Store
from bridge.store.spool import Spool
from bridge.store.submissions import review_free_text
from bridge.web.console.auth import current
from bridge.web.errors import http_error, status_of
from bridge.web.pacs import OpenPacs

Page = Callable[..., HTMLResponse]


def add_action_routes(
    router: APIRouter,
    settings: Settings,
    store: Store,
    spool: Spool,
    page: Page,
    open_pacs: OpenPacs,
) -> None:
    @router.get("/quarantine")
    def quarantine_page(request: Request, done: str = "") -> HTMLResponse:
        session = current(store, request)
        return page("quarantine.html", session, held=quarantine.held(store), done=done)

    @router.post("/quarantine/instances/{instance_id}/{action}")
    async def instance_action(request: Request, instance_id: int, action: str) -> Response:
        session = current(store, request)
        session.require("admin")
        session.check_csrf(await request.form())
        try:
            case_id = act_on_instance(store, spool, instance_id, action)
        except SubmitError as exc:
            raise http_error(exc, context=False) from None
        audit.record(
            store,
            session.user.username,
            f"instance.{action}",
            case_id=case_id,
            instance=instance_id,
        )
        return RedirectResponse(f"/quarantine?done={action}", status_code=303)

    @router.post("/quarantine/reports/{report_id}/{action}")
    async def report_action(request: Request, report_id: int, action: str) -> Response:
        session = current(store, request)
        session.require("admin")
        session.check_csrf(await request.form())
        try:
            case_id = act_on_report(store, report_id, action)
        except SubmitError as exc:
            raise http_error(exc, context=False) from None
        audit.record(
            store, session.user.username, f"report.{action}", case_id=case_id, report=report_id
        )
        return RedirectResponse(f"/quarantine?done=report-{action}", status_code=303)

    @router.post("/cases/{case_id}/free-text")
    async def review_text(request: Request, case_id: str) -> Response:
        """An administrator approves the case's free text to leave, as shown or edited."""
        session = current(store, request)
        session.require("admin")
        form = await request.form()
        session.check_csrf(form)
        report = str(form.get("original_report", "")).strip()
        try:
            review_free_text(
                store,
                case_id,
                session.user.username,
                str(form.get("question", "")).strip(),
                report or None,
            )
        except SubmitError as exc:
            raise http_error(exc, context=False) from None
        audit.record(store, session.user.username, "case.free_text_reviewed", case_id=case_id)
        return RedirectResponse(f"/cases/{case_id}", status_code=303)

    @router.post("/cases/{case_id}/workitem/offer-again")
    async def offer_again(request: Request, case_id: str) -> Response:
        """An administrator puts a case whose worklist item was canceled back on the worklist."""
        session = current(store, request)
        session.require("admin")
        session.check_csrf(await request.form())
        try:
            store.workitems.offer_again(case_id, session.user.username)
        except WorklistError as exc:
            raise http_error(exc) from None
        return RedirectResponse(f"/cases/{case_id}", status_code=303)

    @router.get("/submit")
    def submit_page(
        request: Request,
        patient_id: str = "",
        patient_name: str = "",
        accession: str = "",
        date_from: str = "",
        date_to: str = "",
        modality: str = "",
    ) -> HTMLResponse:
        session = current(store, request)
        session.require("submit")
        query = {
            "patient_id": patient_id,
            "patient_name": patient_name,
            "accession": accession,
            "date_from": date_from,
            "date_to": date_to,
            "modality": modality,
        }
        results: list[dict[str, Any]] = []
        error = ""
        if any(query.values()):
            try:
                results = _search(open_pacs, query)
            except (BridgeError, ValueError) as exc:
                error = str(exc)
        return page("submit.html", session, query=query, results=results, error=error)

    @router.post("/submit")
    async def submit_case(request: Request) -> Response:
        from bridge.pipeline.submit import Submission, submit

        session = current(store, request)
        session.require("submit")
        form = await request.form()
        session.check_csrf(form)
        sub = Submission(
            question=str(form.get("question", "")),
            subspecialty=str(form.get("subspecialty", "general")),
            priority=str(form.get("priority", "routine")),
            study_uid=str(form.get("study_uid", "")),
            original_report=str(form.get("original_report", "")) or None,
            submitted_by=session.user.username,
            priors=int(str(form.get("priors", "0") or "0")),
        )
        try:
            client = open_pacs()
            try:
                case_id, _ = submit(settings.submit, store, client, sub)
            finally:
                client.close()
        except (SubmitError, PullError, ConfigError) as exc:
            return page(
                "submit.html", session, status=status_of(exc), query={}, results=[], error=str(exc)
            )
        return RedirectResponse(f"/cases/{case_id}", status_code=303)

    @router.post("/submit/upload")
    async def upload(request: Request) -> Response:
        from bridge.web.imports_api import import_upload_file

        session = current(store, request)
        session.require("submit")
        form = await request.form(max_part_size=settings.submit.upload_max_bytes)
        session.check_csrf(form)
        file = form.get("archive")
        if file is None or isinstance(file, str):
            return page(
                "submit.html",
                session,
                status=422,
                query={},
                results=[],
                error="choose a ZIP file to upload",
            )
        try:
            result = await import_upload_file(
                settings,
                store,
                spool,
                file,
                question=str(form.get("question", "")),
                subspecialty=str(form.get("subspecialty", "general")),
                priority=str(form.get("priority", "routine")),
                submitted_by=session.user.username,
            )
        except HTTPException as exc:
            return page(
                "submit.html",
                session,
                status=exc.status_code,
                query={},
                results=[],
                error=str(exc.detail),
            )
        return page("submit.html", session, query={}, results=[], uploaded=result)

    @router.get("/audit")
    def audit_page(request: Request, action: str = "", case_id: str = "") -> HTMLResponse:
        session = current(store, request)
        session.require("admin")
        events = audit.events(store, action=action or None, case_id=case_id or None, limit=500)
        return page("audit.html", session, events=events, action=action, case_id=case_id)


def _search(open_pacs: OpenPacs, q: dict[str, str]) -> list[dict[str, Any]]:
    from bridge.peers.pacs import StudyQuery

    query = StudyQuery(
        patient_id=q["patient_id"],
        patient_name=q["patient_name"],
        accession=q["accession"],
        date_from=date.fromisoformat(q["date_from"]) if q["date_from"] else None,
        date_to=date.fromisoformat(q["date_to"]) if q["date_to"] else None,
        modality=q["modality"],
        limit=200,
    )
    client = open_pacs()
    try:
        return [m.as_dict() for m in client.search(query)]
    finally:
        client.close()
