"""The PACS over DICOMweb: QIDO-RS to search, WADO-RS to retrieve (streamed into the spool), and
STOW-RS to store a returned report into its original study after a QIDO-RS safety check.

Retrieval lists the study's instances first (QIDO-RS), then fetches each series whose instances
are all missing in one multipart stream, and the missing instances of a partly fetched series one
by one: a retrieve interrupted halfway continues where it stopped, without fetching again what
is already spooled.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
from pydicom.dataset import Dataset

from bridge import metrics
from bridge.config import PacsSettings
from bridge.domain.errors import (
    PacsRefusedError,
    PacsUnavailableError,
    PermanentForwardError,
    ReturnSafetyError,
    StudyNotFoundError,
    TransientForwardError,
)
from bridge.logging import get_logger
from bridge.peers.http import dicomweb_session
from bridge.peers.multipart import boundary_of, split_parts
from bridge.peers.pacs import (
    STUDY_KEYS,
    Progress,
    RetrieveOutcome,
    Sink,
    StudyMatch,
    StudyQuery,
)
from bridge.peers.stow import TRANSIENT_HTTP, stow

log = get_logger(__name__)

_DICOM_JSON = "application/dicom+json"
_ACCEPT_ANY_TS = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_ACCEPT_DEFAULT = 'multipart/related; type="application/dicom"'
#: Bytes per read of a WADO-RS stream: what a network cut can lose of a part in progress.
_READ = 64 * 1024


class DicomWebPacs:
    protocol = "dicomweb"
    source = "pull:dicomweb"

    def __init__(self, settings: PacsSettings, new_file: Callable[[], Path]) -> None:
        if not settings.dicomweb_url:
            raise PacsRefusedError("BRIDGE_PACS__DICOMWEB_URL is not set")
        self.url = settings.dicomweb_url
        self.timeout = settings.timeout
        self.session = dicomweb_session(settings)
        self.new_file = new_file
        self._accept = _ACCEPT_ANY_TS

    def close(self) -> None:
        self.session.close()

    # -- HTTP ---------------------------------------------------------------------------------
    def _get(self, path: str, *, stream: bool = False, **kw: Any) -> requests.Response:
        try:
            resp = self.session.get(f"{self.url}{path}", timeout=self.timeout, stream=stream, **kw)
        except requests.exceptions.SSLError:
            raise PacsRefusedError(
                "TLS to the PACS failed: check its certificate, or BRIDGE_PACS__VERIFY_TLS "
                "(a CA bundle path) and BRIDGE_PACS__CLIENT_CERT"
            ) from None
        except requests.RequestException as exc:
            raise PacsUnavailableError(
                "the PACS is unreachable over DICOMweb", error=type(exc).__name__
            ) from None
        if resp.status_code in (401, 403):
            resp.close()
            raise PacsRefusedError(
                "the PACS refused the bridge's credentials: check BRIDGE_PACS__TOKEN, or "
                "BRIDGE_PACS__USERNAME and BRIDGE_PACS__PASSWORD",
                status=resp.status_code,
            )
        if resp.status_code >= 500 or resp.status_code == 429:
            resp.close()
            raise PacsUnavailableError("the PACS answered an error", status=resp.status_code)
        return resp

    def _json(self, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        resp = self._get(path, params=params, headers={"Accept": _DICOM_JSON})
        if resp.status_code == 204:
            return []
        if resp.status_code == 404:
            raise StudyNotFoundError("the PACS has no such study")
        if resp.status_code >= 400:
            raise PacsRefusedError(
                "the PACS refused the query: check BRIDGE_PACS__DICOMWEB_URL",
                status=resp.status_code,
            )
        try:
            data = resp.json()
        except ValueError:
            raise PacsRefusedError(
                "the PACS did not answer DICOM JSON: is BRIDGE_PACS__DICOMWEB_URL its DICOMweb "
                "root?"
            ) from None
        return data if isinstance(data, list) else []

    # -- QIDO-RS ------------------------------------------------------------------------------
    def search(self, query: StudyQuery) -> list[StudyMatch]:
        params: list[tuple[str, str]] = [("includefield", kw) for kw in STUDY_KEYS]
        for kw, value in (
            ("PatientID", query.patient_id),
            ("PatientName", query.patient_name),
            ("AccessionNumber", query.accession),
            ("StudyInstanceUID", query.study_uid),
            ("StudyDate", query.study_date()),
            ("ModalitiesInStudy", query.modality),
        ):
            if value:
                params.append((kw, value))
        if query.patient_name:
            params.append(("fuzzymatching", "false"))
        params.append(("limit", str(query.limit)))
        try:
            rows = self._json("/studies", params)  # type: ignore[arg-type]
        except StudyNotFoundError:
            raise PacsRefusedError(
                "no DICOMweb service at BRIDGE_PACS__DICOMWEB_URL (404 on /studies)"
            ) from None
        out = []
        for row in rows:
            ds = Dataset.from_json(row)
            uid = str(ds.get("StudyInstanceUID", "") or "").strip()
            if uid:
                out.append(StudyMatch(uid, ds))
        return out

    def instances(self, study_uid: str) -> list[tuple[str, str]]:
        rows = self._json(
            f"/studies/{study_uid}/instances",
            {"includefield": ["SeriesInstanceUID", "SOPInstanceUID"]},
        )
        out = []
        for row in rows:
            ds = Dataset.from_json(row)
            series = str(ds.get("SeriesInstanceUID", "") or "")
            sop = str(ds.get("SOPInstanceUID", "") or "")
            if series and sop:
                out.append((series, sop))
        if not out:
            raise StudyNotFoundError("the PACS has no instances of this study")
        return out

    # -- WADO-RS ------------------------------------------------------------------------------
    def retrieve(
        self, study_uid: str, have: set[str], sink: Sink, progress: Progress | None = None
    ) -> RetrieveOutcome:
        outcome = RetrieveOutcome()
        by_series: dict[str, list[str]] = defaultdict(list)
        for series, sop in self.instances(study_uid):
            by_series[series].append(sop)
        for series, sops in by_series.items():
            missing = [s for s in sops if s not in have]
            outcome.skipped += len(sops) - len(missing)
            if not missing:
                continue
            if len(missing) == len(sops):
                outcome.retrieved += self._fetch(
                    f"/studies/{study_uid}/series/{series}", sink, progress
                )
            else:
                for sop in missing:
                    path = f"/studies/{study_uid}/series/{series}/instances/{sop}"
                    outcome.retrieved += self._fetch(path, sink, progress)
        log.info(
            "pull.retrieved",
            protocol="dicomweb",
            retrieved=outcome.retrieved,
            skipped=outcome.skipped,
        )
        return outcome

    def _fetch(self, path: str, sink: Sink, progress: Progress | None) -> int:
        with metrics.WADO_SECONDS.time():
            return self._fetch_timed(path, sink, progress)

    def _fetch_timed(self, path: str, sink: Sink, progress: Progress | None) -> int:
        resp = self._get(path, stream=True, headers={"Accept": self._accept})
        if resp.status_code == 406 and self._accept == _ACCEPT_ANY_TS:
            resp.close()  # a server that cannot send "as stored": take its default syntax
            self._accept = _ACCEPT_DEFAULT
            resp = self._get(path, stream=True, headers={"Accept": self._accept})
        try:
            if resp.status_code == 404:
                raise StudyNotFoundError("the PACS no longer has part of the study")
            if resp.status_code >= 400:
                raise PacsRefusedError("the PACS refused WADO-RS", status=resp.status_code)
            boundary = boundary_of(resp.headers.get("Content-Type", ""))
            n = 0
            for part in split_parts(resp.iter_content(_READ), boundary, self._new_files()):
                sink(part)
                n += 1
                if progress is not None:
                    progress()
            return n
        except requests.RequestException as exc:
            raise PacsUnavailableError(
                "the PACS stopped sending the study", error=type(exc).__name__
            ) from None
        finally:
            resp.close()

    def _new_files(self) -> Iterator[Path]:
        while True:
            yield self.new_file()

    # -- return -------------------------------------------------------------------------------
    def store_report(
        self, path: Path, sop_instance_uid: str, study_uid: str, patient_id: str
    ) -> None:
        """Store a report into its original study: the study must be in the PACS and be
        ``patient_id``'s (else ReturnSafetyError: the report is held); TransientForwardError is
        worth retrying, PermanentForwardError is not."""
        self._check_target(study_uid, patient_id)
        outcome = stow(self.session, self.url, [(sop_instance_uid, path)], self.timeout, "PACS")
        if sop_instance_uid in outcome.stored:
            return
        reason, transient = outcome.failed.get(sop_instance_uid, ("PACS did not confirm", True))
        if transient:
            raise TransientForwardError("PACS did not store the report", reason=reason)
        raise PermanentForwardError("PACS refused the report", reason=reason)

    def _check_target(self, study_uid: str, patient_id: str) -> None:
        try:
            resp = self.session.get(
                f"{self.url}/studies",
                params={"StudyInstanceUID": study_uid, "includefield": "00100020"},
                headers={"Accept": _DICOM_JSON},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise TransientForwardError("PACS unreachable", error=type(exc).__name__) from None
        if resp.status_code in TRANSIENT_HTTP or resp.status_code in (401, 403):
            raise TransientForwardError("PACS answered an error", status=resp.status_code)
        if resp.status_code == 204 or not resp.content:
            raise ReturnSafetyError("the original study is not in the PACS")
        if resp.status_code != 200:
            raise TransientForwardError("PACS search failed", status=resp.status_code)
        try:
            found = resp.json()
        except ValueError:
            raise TransientForwardError("PACS answered malformed JSON") from None
        if not found:
            raise ReturnSafetyError("the original study is not in the PACS")
        ids = {str((s.get("00100020", {}).get("Value") or [""])[0]) for s in found}
        if ids != {patient_id}:
            raise ReturnSafetyError("the PACS study belongs to another Patient ID")
