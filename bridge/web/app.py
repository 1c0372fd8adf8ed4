"""The HTTP application: ``/livez``, ``/readyz`` (= ``/healthz``; no auth), ``/metrics``,
``/api/v1/...`` (bearer token)."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from bridge import __version__, metrics
from bridge.config import Settings
from bridge.domain.errors import StoreError
from bridge.pipeline.worklist import Worklist
from bridge.store.repo import Store
from bridge.store.spool import Spool
from bridge.web.audit_api import audit_router
from bridge.web.cases_api import cases_router
from bridge.web.console.auth import SignInRequired
from bridge.web.console.pages import console_router, mount_static, templates
from bridge.web.findings_api import findings_router
from bridge.web.imports_api import imports_router
from bridge.web.pacs import OpenPacs
from bridge.web.quarantine_api import quarantine_router
from bridge.web.stow_in import stow_router
from bridge.web.studies_api import studies_router
from bridge.web.tokens import Tokens
from bridge.web.worklist_api import worklist_router


def create_app(settings: Settings, store: Store, spool: Spool, open_pacs: OpenPacs) -> FastAPI:
    """The HTTP API and the console; ``open_pacs`` opens a client of the hospital PACS for a
    search or a submission."""
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
            body = metrics.scrape(store, spool_gauges, settings.turnaround.due_hours())
            return Response(body, media_type=CONTENT_TYPE_LATEST)

    if settings.http.api_docs != "off":
        docs_deps = guard(settings.http.api_docs)

        @app.get("/openapi.json", include_in_schema=False, dependencies=docs_deps)
        def openapi_document() -> JSONResponse:
            return JSONResponse(app.openapi())

        @app.get("/docs", include_in_schema=False, dependencies=docs_deps)
        def api_docs() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API")

    app.include_router(findings_router(settings, store, spool, tokens.need("findings")))
    app.include_router(stow_router(store, spool, tokens.need("findings")))
    worklist = Worklist(
        store,
        settings.reading.retrieve_url or settings.reading.dicomweb_url,
        settings.turnaround.due_hours(),
        settings.submit.free_text_review,
    )
    app.include_router(worklist_router(worklist, tokens.need("findings")))
    app.include_router(studies_router(open_pacs, tokens.need("submit")))
    app.include_router(imports_router(settings, store, spool, tokens.need("submit")))
    app.include_router(quarantine_router(store, spool, tokens))
    app.include_router(audit_router(settings, store, tokens.need("admin")))
    app.include_router(console_router(settings, store, spool, open_pacs))
    mount_static(app)
    app.include_router(cases_router(settings, store, spool, tokens, open_pacs))

    return app
