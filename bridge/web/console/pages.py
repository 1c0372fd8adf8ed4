"""The console's pages: sign-in, cases, a case, quarantine, submit, audit trail.

Server-rendered (Jinja2, autoescaped), a few lines of JavaScript for live counts, no build step.
Every page needs a signed-in user; what a role may do: viewer (read), submitter (read, search
and submit, sees the cases it submitted), admin (everything, quarantine actions, audit trail).
"""

from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from bridge.clock import iso_utc
from bridge.config import Settings
from bridge.domain.states import CaseState
from bridge.domain.turnaround import summarize
from bridge.domain.vocabulary import PRIORITIES, SUBSPECIALTIES
from bridge.metrics import TURNAROUND_DAYS
from bridge.store import audit
from bridge.store.accounts import audit_name, close_session, open_session, sign_in
from bridge.store.repo import Store
from bridge.store.spool import Spool
from bridge.store.submissions import free_text_waits
from bridge.web.console.auth import (
    COOKIE,
    Session,
    SignInRequired,
    clear_cookie,
    current,
    set_cookie,
)
from bridge.web.console.throttle import SignInThrottle
from bridge.web.pacs import OpenPacs
from bridge.web.series import series_summary

HERE = Path(__file__).parent
_AGES = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
TIMELINE = (
    ("received", "created_at"),
    ("complete", "completed_at"),
    ("forwarded", "forwarded_at"),
)


def templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = lambda t: (iso_utc(t) or "").replace("T", " ").replace("Z", " UTC")
    env.filters["ago"] = _ago
    env.filters["duration"] = _duration
    env.globals.update(subspecialties=SUBSPECIALTIES, priorities=PRIORITIES)
    return env


def _duration(seconds: float | None) -> str:
    """A median turnaround as people say it: 42 s, 12 min, 3.5 h, 2.1 days; — for none."""
    if seconds is None:
        return "—"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _ago(t: float | None) -> str:
    if not t:
        return ""
    s = max(0, int(time.time() - t))
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= n:
            return f"{s // n} {unit} ago"
    return f"{s} s ago"


def visible_cases(store: Store, session: Session, **filters: str) -> list[dict[str, Any]]:
    rows = store.cases.listing(filters.get("state") or None, 1000)
    out = []
    now = time.time()
    for c in rows:
        if session.user.role == "submitter" and c.get("submitted_by") != session.user.username:
            continue
        if filters.get("subspecialty") and c["subspecialty"] != filters["subspecialty"]:
            continue
        if filters.get("priority") and c["priority"] != filters["priority"]:
            continue
        if filters.get("source") and not str(c["source"]).startswith(filters["source"]):
            continue
        age = _AGES.get(filters.get("age", ""))
        if age and c["created_at"] < now - age:
            continue
        out.append(c)
    return out


def console_router(
    settings: Settings, store: Store, spool: Spool, open_pacs: OpenPacs
) -> APIRouter:
    from bridge.web.console.actions import add_action_routes

    env = templates()
    router = APIRouter(include_in_schema=False)
    secure = settings.http.secure_cookies
    lifetime = settings.http.session_hours * 3600

    def page(name: str, session: Session | None, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = env.get_template(name).render(
            session=session, states=list(CaseState), spool_full=_spool_full(spool), **ctx
        )
        resp = HTMLResponse(html, status_code=status)
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
        )
        return resp

    @router.get("/login")
    def login_form(next: str = "/cases") -> HTMLResponse:  # noqa: A002
        return page("login.html", None, next=_safe_next(next))

    throttle = SignInThrottle(
        settings.http.login_free_attempts, settings.http.login_max_delay_seconds
    )

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        username = str(form.get("username", ""))[:64]
        peer = request.client.host if request.client else None
        keys = throttle.keys(username, peer)
        target = _safe_next(str(form.get("next", "/cases")))
        wait = math.ceil(throttle.retry_after(keys))
        if wait:  # refused without checking the password: no hashing work for a flood
            too_many = page(
                "login.html",
                None,
                status=429,
                error=f"Too many failed sign-ins: try again in {wait} seconds.",
                next=target,
            )
            too_many.headers["Retry-After"] = str(wait)
            return too_many
        # Hashing (argon2id, about 0.1 s) and the audit row run off the event loop.
        result = await run_in_threadpool(sign_in, store, username, str(form.get("password", "")))
        if result.user is None:
            refused = throttle.failed(keys)
            detail: dict[str, Any] = {"refused_before": refused} if refused else {}
            await run_in_threadpool(
                partial(
                    audit.record,
                    store,
                    audit_name(username or "-", result.known),
                    "sign-in",
                    outcome="failure",
                    source_address=peer,
                    **detail,
                )
            )
            return page(
                "login.html", None, status=401, error="Wrong user name or password.", next=target
            )
        user = result.user
        throttle.succeeded(keys[0])
        token, _csrf = await run_in_threadpool(open_session, store, user, lifetime)
        await run_in_threadpool(
            partial(
                audit.record, store, user.username, "sign-in", source_address=peer, role=user.role
            )
        )
        resp = RedirectResponse(target, status_code=303)
        set_cookie(resp, token, secure, int(lifetime))
        return resp

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        session = current(store, request)
        session.check_csrf(await request.form())
        close_session(store, session.token)
        audit.record(store, session.user.username, "sign-out")
        resp = RedirectResponse("/login", status_code=303)
        clear_cookie(resp, secure)
        return resp

    @router.get("/")
    def home() -> Response:
        return RedirectResponse("/cases", status_code=303)

    @router.get("/cases")
    def cases_page(
        request: Request,
        state: str = "",
        subspecialty: str = "",
        priority: str = "",
        source: str = "",
        age: str = "",
    ) -> HTMLResponse:
        session = current(store, request)
        filters = {
            "state": state,
            "subspecialty": subspecialty,
            "priority": priority,
            "source": source,
            "age": age,
        }
        rows = visible_cases(store, session, **filters)
        counts = _counts(visible_cases(store, session))
        return page("cases.html", session, cases=rows, filters=filters, counts=counts)

    @router.get("/turnaround")
    def turnaround_page(request: Request) -> HTMLResponse:
        session = current(store, request)
        now = time.time()
        due = settings.turnaround.due_hours()
        groups = summarize(store.cases.times(now - TURNAROUND_DAYS * 86400), due, now)
        visible = {c["id"] for c in visible_cases(store, session)}
        rows = [  # counts for everyone; the cases themselves for whoever may see them
            {"group": g, "links": [c for c in g.past_due if c in visible]} for g in groups
        ]
        return page("turnaround.html", session, rows=rows, due=due, days=TURNAROUND_DAYS)

    @router.get("/cases/counts.json")
    def counts_json(request: Request) -> JSONResponse:
        session = current(store, request)
        return JSONResponse(_counts(visible_cases(store, session)))

    @router.get("/cases/{case_id}")
    def case_page(request: Request, case_id: str) -> HTMLResponse:
        session = current(store, request)
        case = store.cases.get(case_id)
        if case is None or (
            session.user.role == "submitter" and case.get("submitted_by") != session.user.username
        ):
            raise HTTPException(404, "no such case")
        audit.record(store, session.user.username, "case.viewed", case_id=case_id)
        return page(
            "case.html",
            session,
            case=case,
            series=_series(store, case_id),
            timeline=_timeline(case),
            manifest=_manifest(case),
            reports=_reports(store, spool, case),
            events=audit.events(store, case_id=case_id, limit=100),
            text_review=free_text_waits(case, settings.submit.free_text_review),
        )

    add_action_routes(router, settings, store, spool, page, open_pacs)
    return router


def mount_static(app: Any) -> None:
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")


def _spool_full(spool: Spool) -> str:
    """Why new instances are refused right now ("" when they are not)."""
    from bridge.domain.errors import SpoolFullError

    try:
        spool.check_room(0)
    except SpoolFullError as exc:
        return exc.message
    return ""


def _safe_next(target: str) -> str:
    """Only paths of this console (no open redirect)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/cases"
    return quote(target, safe="/?=&-_.~%")


def _counts(cases: list[dict[str, Any]]) -> dict[str, int]:
    out = {s.value: 0 for s in CaseState}
    for c in cases:
        out[c["state"]] = out.get(c["state"], 0) + 1
    out["total"] = len(cases)
    return out


def _timeline(case: dict[str, Any]) -> list[tuple[str, float | None]]:
    steps: list[tuple[str, float | None]] = [(label, case.get(key)) for label, key in TIMELINE]
    returned = [r["returned_at"] for r in case.get("reports", []) if r.get("returned_at")]
    findings = [r["created_at"] for r in case.get("reports", [])]
    steps.append(("findings", min(findings) if findings else None))
    steps.append(("returned", max(returned) if returned else None))
    return steps


def _series(store: Store, case_id: str) -> list[dict[str, Any]]:
    return series_summary(store.instances.of_case(case_id))


def _manifest(case: dict[str, Any]) -> str:
    import json

    from bridge.pipeline.manifest import build_manifest

    if not case.get("pseudo_study_uid"):
        return ""
    return json.dumps(build_manifest(case, max(1, case["manifest_version"])), indent=2)


def _reports(store: Store, spool: Spool, case: dict[str, Any]) -> list[dict[str, Any]]:
    from bridge.findings.render import sr_lines
    from bridge.store import report_files

    out = []
    for r in case.get("reports", []):
        lines: list[Any] = []
        try:
            if r["file_name"]:  # "" once deleted after the retention period
                ds = report_files.load(store, spool, r["file_name"])
                if "ContentSequence" in ds:
                    lines = sr_lines(ds)
        except Exception:  # noqa: BLE001, S110 - a report file that cannot be shown stays listed
            pass
        out.append({**r, "lines": lines})
    return out


__all__ = ["COOKIE", "SignInRequired", "console_router", "mount_static"]
