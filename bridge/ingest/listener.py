"""The DICOM listener: C-ECHO and C-STORE for every storage SOP class.

The C-STORE handler only spools and records: pynetdicom streams the dataset to a file in
``spool/partial`` (never the whole study in memory), the handler reads the few attributes it
needs, moves the file durably into ``spool/received``, appends the instance's record to the
intake journal (``store/journal.py``, synced), and only then answers Success; the journal's
thread records it in the state store moments later. No network call, no de-identification
here: that is the workers' job.

Statuses (PS3.4 Annex B and pynetdicom ``apps/common.py`` conventions):

* 0x0000 Success: the instance is on disk (fsynced) and its record in the journal (synced).
* 0xA700 Refused: Out of Resources: spool quota reached, disk full, or the journal could not
  take the record (nothing half-written is kept).
* 0xC210 Error: Cannot Understand: the dataset cannot be decoded, or it lacks a valid
  SOP Class UID, SOP Instance UID or Study Instance UID.
* 0xA900 Error: Data Set Does Not Match SOP Class: the dataset's SOP Class / Instance UIDs
  differ from those of the C-STORE request.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, dimse_messages, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from bridge import metrics
from bridge.config import Settings
from bridge.domain.errors import DatasetError, SpoolError, SpoolFullError, StoreError
from bridge.logging import get_logger
from bridge.peers import dimse_guard
from bridge.pipeline.intake import Origin, journal_file, read_header
from bridge.store.journal import IntakeJournal
from bridge.store.spool import Spool

log = get_logger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC210
STATUS_DATASET_MISMATCH = 0xA900

# A-ASSOCIATE-RJ (result, source, diagnostic)
_REJECT_CALLING = (0x01, 0x01, 0x03)
_REJECT_CALLED = (0x01, 0x01, 0x07)
#: Rejected transient, service provider (presentation), local limit exceeded: as pynetdicom
#: answers over ``maximum_associations`` in one process.
_REJECT_BUSY = (0x02, 0x03, 0x02)


def _nothing() -> None:
    pass


def storage_contexts() -> list[str]:
    """Abstract syntaxes accepted: every storage SOP class pynetdicom knows."""
    from pynetdicom import AllStoragePresentationContexts

    return [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]


class Listener:
    """Owns the pynetdicom AE and its server thread."""

    def __init__(
        self,
        settings: Settings,
        journal: IntakeJournal,
        spool: Spool,
        on_receiving: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.spool = spool
        #: Called when an association is admitted and after each instance stored: the node's
        #: pipeline waits while the listener receives (``runtime/activity.py`` ListenerFirst).
        self.on_receiving = on_receiving or _nothing
        self._server: dimse_guard.GuardedServer | None = None

        # Stream each received dataset to a file in this node's spool/partial folder. pynetdicom
        # writes it with tempfile.NamedTemporaryFile: its module's name is pointed at one that
        # writes there (the process-wide temporary directory is left alone).
        _config.STORE_RECV_CHUNKED_DATASET = True
        setattr(  # noqa: B010 - the name pynetdicom looks up when it opens the file
            dimse_messages,
            "NamedTemporaryFile",
            functools.partial(tempfile.NamedTemporaryFile, dir=str(spool.partial_dir)),
        )

        dimse = settings.dimse
        ae = AE(ae_title=dimse.ae_title)
        ae.maximum_associations = dimse.max_associations
        ae.acse_timeout = dimse.timeout
        ae.dimse_timeout = dimse.timeout
        ae.network_timeout = dimse.timeout
        ae.maximum_pdu_size = dimse.max_pdu_bytes  # finite: a PDU over it is refused unread
        dimse_guard.install()
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        for uid in storage_contexts():
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        self.ae = ae

    # -- lifecycle --------------------------------------------------------------------------
    def start(
        self, shared: socket.socket | None = None, load: dimse_guard.DoorLoad | None = None
    ) -> None:
        """``shared``: a listening socket this process shares with other listener processes
        (``runtime/door.py``), ``load`` their open connections; none: the listener binds
        ``dimse.host``:``dimse.port``."""
        dimse = self.settings.dimse
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, self._on_connection),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ABORTED, self._on_ended),
            (evt.EVT_CONN_CLOSE, self._on_ended),
        ]
        ctx = None
        if dimse.tls_cert and dimse.tls_key:
            from bridge.tls import server_context

            ctx = server_context(dimse.tls_cert, dimse.tls_key, dimse.tls_ca)
        self._server = dimse_guard.start_server(
            self.ae,
            (dimse.host, dimse.port),
            handlers,
            ctx,
            per_peer=dimse.max_connections_per_peer,
            total=2 * dimse.max_associations + 4,
            shared=shared,
            load=load,
        )
        log.info(
            "listener.started",
            ae_title=dimse.ae_title,
            host=dimse.host,
            port=self.port,
            tls=ctx is not None,
            client_certificates=bool(ctx is not None and dimse.tls_ca),
        )

    @property
    def port(self) -> int:
        if self._server is None:
            return self.settings.dimse.port
        return int(self._server.server_address[1])

    def shutdown(self, grace: float) -> None:
        """Stop accepting, let running associations finish for ``grace`` seconds, then abort
        the rest (their unanswered instances were never acknowledged, so nothing is lost)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()  # (and leaves the load file: the others stop sending it connections)
        running = server.active_associations
        deadline = time.monotonic() + grace
        while running and time.monotonic() < deadline:
            running = [a for a in running if a.is_alive()]
            time.sleep(0.05)
        for assoc in running:
            assoc.abort()
        log.info("listener.stopped", aborted=len(running))

    # -- handlers ---------------------------------------------------------------------------
    @staticmethod
    def _on_connection(event: Any) -> None:
        # Without TCP_NODELAY each small C-STORE response waits for the peer's delayed ACK
        # (Nagle): ~40 ms per instance on loopback.
        sock = getattr(event.assoc.dul.socket, "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        rq = assoc.requestor.primitive
        calling = str(rq.calling_ae_title).strip()
        called = str(rq.called_ae_title).strip()
        # Every log line of this association's thread carries its id and AE titles.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            association=uuid.uuid4().hex[:10], calling_aet=calling[:16], called_aet=called[:16]
        )
        if not self.settings.dimse.admits(calling, str(assoc.requestor.address)):
            log.warning("association.rejected", reason="calling AE title not allowed")
            metrics.ASSOCIATIONS_REJECTED.labels(reason="calling_aet").inc()
            self._reject(assoc, _REJECT_CALLING)
            return
        if called not in self.settings.dimse.accepted_called_aets:
            log.warning("association.rejected", reason="called AE title not served")
            metrics.ASSOCIATIONS_REJECTED.labels(reason="called_aet").inc()
            self._reject(assoc, _REJECT_CALLED)
            return
        if self._node_is_full():
            log.warning("association.rejected", reason="too many associations on the node")
            metrics.ASSOCIATIONS_REJECTED.labels(reason="associations").inc()
            self._reject(assoc, _REJECT_BUSY)
            return
        self.on_receiving()

    def _node_is_full(self) -> bool:
        """Over ``dimse.max_associations`` counting the node's other listener processes too
        (their open connections; pynetdicom counts this process's own associations, this one
        included, and rejects alike)."""
        server = self._server
        others = 0 if server is None else server.others_open()
        if server is None or not others:
            return False
        return server.open_connections() + others > self.settings.dimse.max_associations

    @staticmethod
    def _reject(assoc: Any, rsd: tuple[int, int, int]) -> None:
        # As pynetdicom's own ACSE does for require_calling_aet: send A-ASSOCIATE-RJ, mark the
        # association rejected (so negotiation is skipped) and stop its DUL.
        assoc.acse.send_reject(*rsd)
        assoc.is_rejected = True
        assoc.kill()

    @staticmethod
    def _on_ended(event: Any) -> None:
        """An association aborted or dropped in the middle of a dataset leaves pynetdicom's
        half-written temporary file in spool/partial: remove it now (it was never
        acknowledged), rather than at the next start."""
        message = getattr(getattr(event.assoc, "dimse", None), "message", None)
        handle = getattr(message, "_data_set_file", None)
        path = getattr(message, "_data_set_path", None)
        if handle is None or path is None:
            return
        with contextlib.suppress(OSError):
            handle.close()
        with contextlib.suppress(OSError):
            if Path(path).exists():
                Path(path).unlink()
                log.warning("store.partial_removed", reason="association ended mid-dataset")

    def _on_echo(self, event: Any) -> int:
        return STATUS_SUCCESS

    def _on_store(self, event: Any) -> int:
        path = Path(event.dataset_path)
        req = event.request
        try:
            self.spool.check_room(0)
        except SpoolFullError as exc:
            log.warning("store.refused", reason=exc.message)
            metrics.INSTANCES_FAILED.labels(stage="receive").inc()
            return STATUS_OUT_OF_RESOURCES
        synced = self.spool.sync_soon(path)  # (the disk syncs the file while its header is read)
        try:
            header = read_header(path)
        except DatasetError as exc:
            event = "store.missing_uid" if "UID" in exc.message else "store.undecodable"
            log.warning(event, error=str(exc))
            metrics.INSTANCES_FAILED.labels(stage="receive").inc()
            return STATUS_CANNOT_UNDERSTAND
        if header["SOPInstanceUID"] != str(req.AffectedSOPInstanceUID).strip() or (
            header["SOPClassUID"] != str(req.AffectedSOPClassUID).strip()
        ):
            log.warning("store.uid_mismatch")
            metrics.INSTANCES_FAILED.labels(stage="receive").inc()
            return STATUS_DATASET_MISMATCH

        assoc = event.assoc
        called = str(assoc.requestor.primitive.called_ae_title).strip()
        calling = str(assoc.requestor.ae_title).strip()
        route = self.settings.dimse.route_for(called)
        origin = Origin(
            calling_aet=calling,
            called_aet=called,
            subspecialty=route.subspecialty if route else self.settings.default_subspecialty,
            priority=route.priority if route else self.settings.default_priority,
            question=route.question if route else "",
        )
        try:
            journal_file(self.journal, self.spool, path, origin, header, synced)
        except SpoolFullError as exc:
            log.warning("store.refused", reason=exc.message)
            metrics.INSTANCES_FAILED.labels(stage="receive").inc()
            return STATUS_OUT_OF_RESOURCES
        except (SpoolError, StoreError, OSError) as exc:
            log.error("store.failed", error=str(exc))
            metrics.INSTANCES_FAILED.labels(stage="receive").inc()
            return STATUS_OUT_OF_RESOURCES
        log.debug("store.accepted")
        self.on_receiving()
        return STATUS_SUCCESS
