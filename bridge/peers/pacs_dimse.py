"""Pull over DIMSE, for a PACS without DICOMweb: C-FIND (Study Root) to search, then C-MOVE to
the bridge's own listener or C-GET on the same association.

Every classic misconfiguration becomes a message naming what to change: the PACS rejecting the
bridge's calling AE title (register the bridge in the PACS), a wrong called AE title
(``pacs.ae_title``), the move destination unknown to the PACS (0xA801: register the bridge's AE
title, host and port as a DICOM node), a query/retrieve model the PACS does not accept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, StoragePresentationContexts, _config, build_role, evt
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from bridge.config import DimseSettings, PacsSettings
from bridge.domain.errors import (
    BridgeError,
    PacsNotAcceptedError,
    PacsRefusedError,
    PacsUnavailableError,
    PermanentForwardError,
    PullError,
    ReturnSafetyError,
    StudyNotFoundError,
    TransientForwardError,
)
from bridge.logging import get_logger
from bridge.peers import dimse_guard
from bridge.peers.pacs import (
    STUDY_KEYS,
    Progress,
    RetrieveOutcome,
    Sink,
    StudyMatch,
    StudyQuery,
)

log = get_logger(__name__)

_PENDING = (0xFF00, 0xFF01)
_MODELS = {
    StudyRootQueryRetrieveInformationModelFind: "Study Root Query/Retrieve - FIND",
    StudyRootQueryRetrieveInformationModelMove: "Study Root Query/Retrieve - MOVE",
    StudyRootQueryRetrieveInformationModelGet: "Study Root Query/Retrieve - GET",
}
#: A-ASSOCIATE-RJ diagnostics (PS3.8 9.3.4) with the setting to change.
_REJECTIONS = {
    (1, 2): "the PACS does not know the bridge's calling AE title {calling}: register the bridge "
    "(AE title, host, port) in the PACS",
    (1, 3): "the PACS does not know the bridge's calling AE title {calling}: register the bridge "
    "(AE title, host, port) in the PACS",
    (1, 7): "the PACS does not answer to the called AE title {called}: check BRIDGE_PACS__AE_TITLE",
}
_STATUS_OK = 0x0000


def _not_accepted(model: str) -> str:
    return (
        f"the PACS does not accept {_MODELS.get(model) or UID(model).name} from the bridge: "
        "enable it for the bridge's AE title in the PACS"
    )


_STATUS_DATASET = 0xC210
_STATUS_RESOURCES = 0xA700


def _retrieve_failure(code: int, destination: str | None) -> BridgeError:
    """The error for a failed C-MOVE (``destination`` set) or C-GET final status."""
    if code == 0xA801 and destination:
        return PacsRefusedError(
            f"the PACS does not know the move destination {destination}: add the bridge as a "
            "DICOM node in the PACS (its AE title, host and DICOM port), or set "
            "BRIDGE_PACS__MOVE_DESTINATION to the name the PACS knows it by",
            status="0xA801",
        )
    if code & 0xFF00 == 0xA700:
        return PacsUnavailableError("the PACS is out of resources", status=f"0x{code:04X}")
    if code == 0xA900:
        return PacsRefusedError("the PACS found the request invalid", status="0xA900")
    if code == 0xFE00:
        return PacsUnavailableError("the PACS cancelled the retrieve", status="0xFE00")
    if destination and code & 0xF000 == 0xC000:
        # "Unable to process": what Orthanc and others answer for a move destination they do
        # not know (the standard's 0xA801 is rarer in practice).
        return PacsRefusedError(
            "the PACS could not process the C-MOVE; the usual cause: it does not know the move "
            f"destination {destination}. Add the bridge as a DICOM node in the PACS (its AE "
            "title, host and DICOM port), or set BRIDGE_PACS__MOVE_DESTINATION to the name the "
            "PACS knows it by",
            status=f"0x{code:04X}",
        )
    return PacsRefusedError("the PACS refused the retrieve", status=f"0x{code:04X}")


def dimse_tls_args(pacs: PacsSettings) -> tuple[Any, str] | None:
    """pynetdicom's ``tls_args`` for associations to the PACS (None: plain TCP)."""
    if not pacs.dimse_tls or not pacs.host:
        return None
    from bridge.tls import client_context

    return client_context(pacs.verify_tls, pacs.client_cert, pacs.client_key), pacs.host


def associate(
    ae: AE, host: str, port: int, *, evt_handlers: list[Any] | None = None, **kwargs: Any
) -> tuple[Any, tuple[int, int] | None]:
    """``ae.associate`` and the peer's A-ASSOCIATE-RJ (source, diagnostic), if it sent one.

    The rejection is read from the PDU itself: pynetdicom 3.0 reports the association aborted,
    not rejected, when the peer closes the connection right after its A-ASSOCIATE-RJ before
    the requesting thread looks (Orthanc does, about 3 times in 100 on loopback)."""
    seen: list[tuple[int, int]] = []

    def on_pdu(event: Any) -> None:
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            seen.append((int(event.pdu.source or 0), int(event.pdu.reason_diagnostic or 0)))

    handlers = [*(evt_handlers or []), (evt.EVT_PDU_RECV, on_pdu)]
    assoc = ae.associate(host, port, evt_handlers=handlers, **kwargs)
    if assoc.is_established:
        return assoc, None
    return assoc, seen[0] if seen else None


class DimsePacs:
    protocol = "dimse"

    def __init__(
        self, pacs: PacsSettings, dimse: DimseSettings, new_file: Callable[[], Path]
    ) -> None:
        if not (pacs.ae_title and pacs.host and pacs.port):
            raise PacsRefusedError("set BRIDGE_PACS__AE_TITLE, __HOST and __PORT")
        self.called = pacs.ae_title
        self.host = pacs.host
        self.port = pacs.port
        self.timeout = pacs.timeout
        self.calling = dimse.ae_title
        self.destination = pacs.move_destination or dimse.ae_title
        self.retrieve_mode = pacs.dimse_retrieve
        self.source = f"pull:{pacs.dimse_retrieve}"
        self.new_file = new_file
        self.tls_args = dimse_tls_args(pacs)
        self.max_pdu = dimse.max_pdu_bytes
        dimse_guard.install()  # C-GET brings instances over this association: bounded PDUs

    def close(self) -> None:
        return None

    # -- association --------------------------------------------------------------------------
    @contextmanager
    def _association(
        self, model: str, storage: list[str] | None = None, handlers: list[Any] | None = None
    ) -> Iterator[Any]:
        ae = AE(ae_title=self.calling)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.maximum_pdu_size = self.max_pdu
        ae.add_requested_context(model)
        roles: list[Any] = []
        for uid in storage or []:
            ae.add_requested_context(uid)
            roles.append(build_role(uid, scp_role=True))
        assoc, rejection = associate(
            ae,
            self.host,
            self.port,
            ae_title=self.called,
            ext_neg=roles or None,
            evt_handlers=handlers or None,
            tls_args=self.tls_args,
        )
        if rejection is not None:
            template = _REJECTIONS.get(rejection)
            if template is None:
                template = "the PACS rejected the association (source {source}, reason {reason})"
            raise PacsRefusedError(
                template.format(
                    calling=self.calling,
                    called=self.called,
                    source=rejection[0],
                    reason=rejection[1],
                )
            )
        if not assoc.is_established:
            if assoc.rejected_contexts and not assoc.accepted_contexts:
                raise PacsNotAcceptedError(_not_accepted(model))
            raise PacsUnavailableError(
                "the PACS is unreachable over DICOM", host=self.host, port=self.port
            )
        try:
            if not any(cx.abstract_syntax == model for cx in assoc.accepted_contexts):
                raise PacsNotAcceptedError(_not_accepted(model))
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    # -- C-FIND -------------------------------------------------------------------------------
    def _find(self, query: Dataset) -> list[Dataset]:
        out: list[Dataset] = []
        model = StudyRootQueryRetrieveInformationModelFind
        with self._association(model) as assoc:
            for status, ident in assoc.send_c_find(query, model):
                if not status:
                    raise PacsUnavailableError("the PACS dropped the C-FIND")
                code = int(status.Status)
                if code in _PENDING:
                    if ident is not None:
                        out.append(ident)
                elif code != _STATUS_OK:
                    raise PacsRefusedError("the PACS refused the C-FIND", status=f"0x{code:04X}")
        return out

    def search(self, query: StudyQuery) -> list[StudyMatch]:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        for kw in STUDY_KEYS:
            setattr(ds, kw, "")
        ds.PatientID = query.patient_id
        ds.PatientName = query.patient_name
        ds.AccessionNumber = query.accession
        ds.StudyInstanceUID = query.study_uid
        ds.StudyDate = query.study_date()
        ds.ModalitiesInStudy = query.modality
        out = []
        for ident in self._find(ds)[: query.limit]:
            uid = str(ident.get("StudyInstanceUID", "") or "").strip()
            if uid:
                out.append(StudyMatch(uid, ident))
        return out

    def _instances(self, study_uid: str) -> list[tuple[str, str, str]]:
        """(series, SOP instance, SOP class) of every instance: series, then images."""
        q = Dataset()
        q.QueryRetrieveLevel = "SERIES"
        q.StudyInstanceUID = study_uid
        q.SeriesInstanceUID = ""
        series = [str(d.SeriesInstanceUID) for d in self._find(q) if d.get("SeriesInstanceUID")]
        if not series:
            raise StudyNotFoundError("the PACS has no instances of this study")
        out = []
        for uid in series:
            q = Dataset()
            q.QueryRetrieveLevel = "IMAGE"
            q.StudyInstanceUID = study_uid
            q.SeriesInstanceUID = uid
            q.SOPInstanceUID = ""
            q.SOPClassUID = ""
            for d in self._find(q):
                sop = str(d.get("SOPInstanceUID", "") or "")
                if sop:
                    out.append((uid, sop, str(d.get("SOPClassUID", "") or "")))
        return out

    def instances(self, study_uid: str) -> list[tuple[str, str]]:
        return [(series, sop) for series, sop, _ in self._instances(study_uid)]

    # -- return (C-FIND safety check, then C-STORE) ----------------------------------------------
    def store_report(
        self, path: Path, sop_instance_uid: str, study_uid: str, patient_id: str
    ) -> None:
        """Store a report into its original study: the study must be in the PACS and be
        ``patient_id``'s (else ReturnSafetyError: the report is held). A PACS that does not
        take the object's SOP class is PermanentForwardError; anything else the PACS or the
        network may fix by itself (or once the administrator registered the bridge) is
        TransientForwardError, retried."""
        try:
            self._check_target(study_uid, patient_id)
            ds = dcmread(path)
            with self._association(str(ds.SOPClassUID)) as assoc:
                status = assoc.send_c_store(ds)
        except PacsNotAcceptedError as exc:
            raise PermanentForwardError(exc.message, **exc.context) from None
        except PullError as exc:
            raise TransientForwardError(exc.message, **exc.context) from None
        if not status:
            raise TransientForwardError("C-STORE to the PACS got no answer")
        code = int(status.Status)
        if code == _STATUS_OK or code & 0xF000 == 0xB000:  # success, or warning (stored)
            return
        if code & 0xFF00 == _STATUS_RESOURCES:
            raise TransientForwardError("the PACS is out of resources", status=f"0x{code:04X}")
        raise PermanentForwardError("the PACS refused the report", status=f"0x{code:04X}")

    def _check_target(self, study_uid: str, patient_id: str) -> None:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        query.PatientID = ""
        ids = {str(d.get("PatientID", "")) for d in self._find(query)}
        if not ids:
            raise ReturnSafetyError("the original study is not in the PACS")
        if ids != {patient_id}:
            raise ReturnSafetyError("the PACS study belongs to another Patient ID")

    # -- C-MOVE / C-GET -----------------------------------------------------------------------
    def retrieve(
        self, study_uid: str, have: set[str], sink: Sink, progress: Progress | None = None
    ) -> RetrieveOutcome:
        listing = self._instances(study_uid)
        missing = [(se, sop, cls) for se, sop, cls in listing if sop not in have]
        outcome = RetrieveOutcome(skipped=len(listing) - len(missing))
        if not missing:
            return outcome
        # The whole study in one request when nothing is here yet; else the missing instances.
        requests = (
            [self._identifier(study_uid)]
            if not outcome.skipped
            else [self._identifier(study_uid, se, sop) for se, sop, _ in missing]
        )
        if self.retrieve_mode == "c-get":
            classes = sorted({cls for _, _, cls in missing if cls})
            self._c_get(requests, classes, sink, outcome, progress)
        else:
            self._c_move(requests, outcome, progress)
        log.info(
            "pull.retrieved",
            protocol=self.retrieve_mode,
            retrieved=outcome.retrieved,
            skipped=outcome.skipped,
            failed=outcome.failed,
        )
        return outcome

    @staticmethod
    def _identifier(study_uid: str, series: str = "", sop: str = "") -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = "IMAGE" if sop else "STUDY"
        ds.StudyInstanceUID = study_uid
        if sop:
            ds.SeriesInstanceUID = series
            ds.SOPInstanceUID = sop
        return ds

    def _c_move(
        self, identifiers: list[Dataset], outcome: RetrieveOutcome, progress: Progress | None
    ) -> None:
        model = StudyRootQueryRetrieveInformationModelMove
        with self._association(model) as assoc:
            for ident in identifiers:
                self._collect(assoc.send_c_move(ident, self.destination, model), outcome, progress)

    def _c_get(
        self,
        identifiers: list[Dataset],
        classes: list[str],
        sink: Sink,
        outcome: RetrieveOutcome,
        progress: Progress | None,
    ) -> None:
        model = StudyRootQueryRetrieveInformationModelGet
        storage = classes or [str(cx.abstract_syntax) for cx in StoragePresentationContexts]
        storage = storage[:120]  # 128 presentation contexts at most, with room for the model

        def on_store(event: Any) -> int:
            path = Path(event.dataset_path)
            try:
                sink(path)
            except BridgeError as exc:
                log.warning("pull.store_refused", error=str(exc))
                return _STATUS_RESOURCES if "spool" in exc.message else _STATUS_DATASET
            return _STATUS_OK

        # Stream each sub-operation's dataset to a file, as the listener does.
        _config.STORE_RECV_CHUNKED_DATASET = True
        with self._association(model, storage, [(evt.EVT_C_STORE, on_store)]) as assoc:
            for ident in identifiers:
                self._collect(assoc.send_c_get(ident, model), outcome, progress)

    def _collect(self, responses: Any, outcome: RetrieveOutcome, progress: Progress | None) -> None:
        last: Dataset | None = None
        pending = 0
        for status, _ident in responses:
            if not status:
                raise PacsUnavailableError("the PACS dropped the retrieve")
            last = status
            code = int(status.Status)
            if code in _PENDING:
                pending += 1
                if progress is not None:
                    progress()
                continue
            completed = int(status.get("NumberOfCompletedSuboperations", 0) or 0)
            failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
            warning = int(status.get("NumberOfWarningSuboperations", 0) or 0)
            outcome.retrieved += completed + warning
            outcome.failed += failed
            if code == _STATUS_OK or code & 0xF000 == 0xB000:
                if failed:
                    outcome.warnings.append(f"{failed} instance(s) not sent by the PACS")
                continue
            if completed or warning or failed or pending:
                # The move got under way and then failed (a destination that refused some
                # instances, e.g. our own full spool): a partial retrieve, asked again.
                outcome.failed += max(1, failed)
                outcome.warnings.append(f"the PACS stopped the retrieve (status 0x{code:04X})")
                continue
            raise _retrieve_failure(
                code, self.destination if self.retrieve_mode == "c-move" else None
            )
        if last is None:
            raise PacsUnavailableError("the PACS did not answer the retrieve")
