"""``GET /api/v1/studies``: search the hospital PACS for a study to send (token role ``submit``;
the answers, identifying, go only to the caller)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query

from bridge.peers.pacs import StudyQuery
from bridge.web.pacs import OpenPacs, pacs


def studies_router(open_pacs: OpenPacs, auth: Any) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["studies"], dependencies=[Depends(auth)])

    @router.get("/studies")
    def search_studies(
        patient_id: Annotated[str, Query(max_length=64)] = "",
        patient_name: Annotated[str, Query(max_length=64)] = "",
        accession_number: Annotated[str, Query(max_length=64)] = "",
        study_instance_uid: Annotated[str, Query(max_length=64)] = "",
        date_from: date | None = None,
        date_to: date | None = None,
        modality: Annotated[str, Query(max_length=16)] = "",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Search the hospital PACS (its answers, identifying, go only to the caller)."""
        query = StudyQuery(
            patient_id=patient_id,
            patient_name=patient_name,
            accession=accession_number,
            study_uid=study_instance_uid,
            date_from=date_from,
            date_to=date_to,
            modality=modality,
            limit=limit,
        )
        if query.date_from and query.date_to and query.date_from > query.date_to:
            raise HTTPException(422, "date_from is after date_to")
        with pacs(open_pacs) as client:
            return [m.as_dict() for m in client.search(query)]

    return router
