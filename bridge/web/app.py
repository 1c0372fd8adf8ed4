"""The HTTP application: ``/livez``, ``/readyz`` (= ``/healthz``; no auth), ``/metrics``,
``/api/v1/...`` (bearer token)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import quote

import structlog
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from bridge import __version__
from bridge.clock import iso_utc
from bridge.config import Settings
from bridge.errors import StoreError
from bridge.ingest.spool import Spool
from bridge.store.repo import Store
from bridge.store.schema import CaseState
from bridge.web import metrics
from bridge.web.admin_api import admin_router
from bridge.web.console.auth import SignInRequired
from bridge.web.console.pages import console_router, mount_static, templates
from bridge.web.findings_api import findings_router
from bridge.web.series import series_summary
from bridge.web.stow_in import stow_router
from bridge.web.submit_api import imports_router, submit_router
from bridge.web.tokens import Tokens


class InstanceCounts(BaseModel):
    total: int
    received: int
    deidentified: int
    forwarded: int
    quarantined: int
    discarded: int


class ReportOut(BaseModel):
    id: int
    source: str
    status: str
    state: str
    sop_instance_uid: str
    series_instance_uid: str
    error: str | None
    created_at: str
    returned_at: str | None


class PriorOut(BaseModel):
    original_study_instance_uid: str
    pseudonymized_study_instance_uid: str | None
    #: How the study was confirmed to be the same patient's: "patient_id+issuer", or
    #: "patient_id+birth_date+sex" where either study has no issuer.
    matched_by: str | None
    instances: int
    forwarded: int


class CaseOut(BaseModel):
    """A case as the API shows it. Original UIDs are shown to authenticated hospital users."""

    id: str
    state: CaseState
    source: str
    subspecialty: str
    priority: str
    question: str
    #: The referring report sent with a submitted case, scrubbed of the patient's identifiers.
    original_report: str | None
    submitted_by: str | None
    modalities: list[str]
    body_part: str | None
    original_study_instance_uid: str
    pseudonymized_study_instance_uid: str | None
    pseudonymous_patient_id: str | None
    calling_ae_title: str | None
    called_ae_title: str | None
    instances: InstanceCounts
    #: Submitted cases: how many instances the PACS has for the study (and its priors).
    expected_instances: int | None
    #: Earlier studies of the patient sent with the case.
    priors: list[PriorOut]
    #: Priors asked for: earlier studies with the same Patient ID not sent because the patient
    #: could not be confirmed (another issuer, or no issuer and birth date or sex not matching).
    priors_unmatched: int | None
    #: With submit.free_text_review: who approved the free text to leave, and when.
    text_reviewed_by: str | None
    text_reviewed_at: str | None
    series: int
    error: str | None
    created_at: str
    updated_at: str
    last_received_at: str
    completed_at: str | None
    forwarded_at: str | None
    reports: list[ReportOut]


def case_out(c: dict[str, Any]) -> CaseOut:
    return CaseOut(
        id=c["id"],
        state=CaseState(c["state"]),
        source=c["source"],
        subspecialty=c["subspecialty"],
        priority=c["priority"],
        question=c["question"] or "",
        original_report=c.get("original_report"),
        submitted_by=c.get("submitted_by"),
        modalities=[m for m in (c["modalities"] or "").split("\\") if m],
        body_part=c["body_part"] or None,
        original_study_instance_uid=c["original_study_uid"],
        pseudonymized_study_instance_uid=c["pseudo_study_uid"],
        pseudonymous_patient_id=c["pseudo_patient_id"],
        calling_ae_title=c["calling_aet"],
        called_ae_title=c["called_aet"],
        instances=InstanceCounts(**{k: c["instances"][k] for k in InstanceCounts.model_fields}),
        expected_instances=c.get("expected_instances"),
        priors=[
            PriorOut(
                original_study_instance_uid=p["study_uid"],
                pseudonymized_study_instance_uid=p["pseudo_study_uid"],
                matched_by=p.get("matched_by"),
                instances=p["instances"],
                forwarded=p["forwarded"],
            )
            for p in c.get("priors", [])
        ],
        priors_unmatched=c.get("priors_unmatched"),
        text_reviewed_by=c.get("text_reviewed_by"),
        text_reviewed_at=iso_utc(c.get("text_reviewed_at")),
        series=c["series"],
        error=c["error"],
        created_at=iso_utc(c["created_at"]) or "",
        updated_at=iso_utc(c["updated_at"]) or "",
        last_received_at=iso_utc(c["last_received_at"]) or "",
        completed_at=iso_utc(c["completed_at"]),
        forwarded_at=iso_utc(c["forwarded_at"]),
        reports=[
            ReportOut(
                id=r["id"],
                source=r["source"],
                status=r["status"],
                state=r["state"],
                sop_instance_uid=r["sop_instance_uid"],
                series_instance_uid=r["series_instance_uid"],
                error=r["error"],
                created_at=iso_utc(r["created_at"]) or "",
                returned_at=iso_utc(r["returned_at"]),
            )
            for r in c.get("reports", [])
        ],
    )


def create_app(settings: Settings, store: Store, spool: Spool) -> FastAPI:
    app = FastAPI(
        title="SECONDOPINION bridge",
        version=__version__,
        description="Second-opinion DICOM bridge: cases, health and metrics.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    console_env = templates()
    spool_gauges = metrics.SpoolCollector(
        spool.root, settings.spool.min_free_bytes, settings.spool.quota_bytes
    )

    tokens = Tokens(settings)

    body_limit = settings.http.max_body_bytes
    own_limits = ("/dicom-web/studies", "/api/v1/imports", "/submit/upload")

    @app.middleware("http")
    async def _body_limit(request: Request, call_next: Any) -> Response:
        """413 before reading a body larger than http.max_body_bytes; 411 for a chunked body
        (its size unknown in advance) outside the upload routes, which stream with limits."""
        if request.method in ("POST", "PUT", "PATCH") and request.url.path not in own_limits:
            declared = request.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > body_limit:
                return JSONResponse(
                    {"detail": f"body larger than {body_limit} bytes"}, status_code=413
                )
            if not declared and request.headers.get("transfer-encoding"):
                return JSONResponse(
                    {"detail": "send a Content-Length (chunked bodies are taken for uploads)"},
                    status_code=411,
                )
        response: Response = await call_next(request)
        return response

    @app.middleware("http")
    async def _request_context(request: Request, call_next: Any) -> Response:
        """A request id on every log line of the request (the path, never the query string:
        a search may carry a patient's name), echoed as X-Request-ID."""
        rid = uuid.uuid4().hex[:12]
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            request_id=rid, method=request.method, path=request.url.path[:200]
        )
        response: Response = await call_next(request)
        response.headers["X-Request-ID"] = rid
        return response

    @app.exception_handler(SignInRequired)
    async def _sign_in(_request: Request, exc: SignInRequired) -> Response:
        return RedirectResponse(f"/login?next={quote(exc.next_path)}", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        path = request.url.path
        if path.startswith(
            ("/api/", "/dicom-web", "/healthz", "/livez", "/readyz", "/metrics", "/static")
        ):
            return JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
        html = console_env.get_template("error.html").render(
            session=None, status=exc.status_code, message=str(exc.detail)
        )
        return HTMLResponse(html, status_code=exc.status_code)

    @app.exception_handler(StoreError)
    async def _store_error(_request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse({"detail": "state store unavailable"}, status_code=503)

    @app.get("/livez", tags=["health"])
    def livez() -> JSONResponse:
        """Liveness: the process answers (touches nothing else, so a slow database does not get
        a healthy process restarted)."""
        return JSONResponse({"status": "ok", "version": __version__})

    @app.get("/readyz", tags=["health"])
    @app.get("/healthz", tags=["health"])
    def readyz() -> JSONResponse:
        """Readiness: the state store answers (``/healthz`` is the same, kept for monitors)."""
        try:
            store.ping()
        except StoreError:
            return JSONResponse({"status": "unhealthy", "store": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "version": __version__})

    def guard(mode: str) -> list[Any]:
        return [Depends(tokens.need("read"))] if mode == "token" else []

    if settings.http.metrics != "off":

        @app.get("/metrics", tags=["health"], dependencies=guard(settings.http.metrics))
        def metrics_endpoint() -> Response:
            return Response(metrics.scrape(store, spool_gauges), media_type=CONTENT_TYPE_LATEST)

    if settings.http.api_docs != "off":
        docs_deps = guard(settings.http.api_docs)

        @app.get("/openapi.json", include_in_schema=False, dependencies=docs_deps)
        def openapi_document() -> JSONResponse:
            return JSONResponse(app.openapi())

        @app.get("/docs", include_in_schema=False, dependencies=docs_deps)
        def api_docs() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API")

    auth = [Depends(tokens.need("read"))]
    app.include_router(findings_router(settings, store, spool, tokens.need("findings")))
    app.include_router(stow_router(store, spool, tokens.need("findings")))
    app.include_router(submit_router(settings, store, spool, tokens.need("submit")))
    app.include_router(imports_router(settings, store, spool, tokens.need("submit")))
    app.include_router(admin_router(settings, store, spool, tokens))
    app.include_router(console_router(settings, store, spool))
    mount_static(app)

    @app.get("/api/v1/cases", dependencies=auth, tags=["cases"])
    def list_cases(
        state: Annotated[CaseState | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[CaseOut]:
        rows = store.list_cases(state.value if state else None, limit, offset)
        return [case_out(c) for c in rows]

    @app.get("/api/v1/cases/{case_id}", dependencies=auth, tags=["cases"])
    def get_case(case_id: str) -> CaseOut:
        c = store.get_case(case_id)
        if c is None:
            raise HTTPException(404, "no such case")
        return case_out(c)

    @app.get("/api/v1/cases/{case_id}/series", dependencies=auth, tags=["cases"])
    def get_case_series(case_id: str) -> list[dict[str, Any]]:
        """Per series: instances by state; the burned-in text scan (frames, frames scanned in
        full, frames with text, regions masked); instances held, by reason."""
        if store.get_case(case_id) is None:
            raise HTTPException(404, "no such case")
        out = series_summary(store.case_rows(case_id))
        return [
            {k: v for k, v in s.items() if k != "pseudo"} | {"series": s["pseudo"]} for s in out
        ]

    return app
