"""``GET /api/v1/cases``, ``/api/v1/cases/{id}`` and ``/api/v1/cases/{id}/series``: what the
bridge knows of its cases (token role ``read``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query

from bridge.domain.states import CaseState
from bridge.store.repo import Store
from bridge.web.schemas import CaseOut, case_out
from bridge.web.series import series_summary


def cases_router(store: Store, auth: Any) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["cases"], dependencies=[Depends(auth)])

    @router.get("/cases")
    def list_cases(
        state: Annotated[CaseState | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[CaseOut]:
        rows = store.list_cases(state.value if state else None, limit, offset)
        return [case_out(c) for c in rows]

    @router.get("/cases/{case_id}")
    def get_case(case_id: str) -> CaseOut:
        c = store.get_case(case_id)
        if c is None:
            raise HTTPException(404, "no such case")
        return case_out(c)

    @router.get("/cases/{case_id}/series")
    def get_case_series(case_id: str) -> list[dict[str, Any]]:
        """Per series: instances by state; the burned-in text scan (frames, frames scanned in
        full, frames with text, regions masked); instances held, by reason."""
        if store.get_case(case_id) is None:
            raise HTTPException(404, "no such case")
        out = series_summary(store.case_rows(case_id))
        return [
            {k: v for k, v in s.items() if k != "pseudo"} | {"series": s["pseudo"]} for s in out
        ]

    return router
