"""Return to a PACS without DICOMweb: C-FIND (safety check) then C-STORE, with pynetdicom.

The messages name what the administrator must change: an association rejected for the calling
AE title means the PACS does not know the bridge (register its AE title, host and port), a
context not accepted means the PACS does not take SR / Key Object storage.
"""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from bridge.config import Settings
from bridge.domain.errors import (
    ConfigError,
    PermanentForwardError,
    ReturnSafetyError,
    TransientForwardError,
)

_PENDING = (0xFF00, 0xFF01)


def _associate(settings: Settings, contexts: list[str]) -> object:
    pacs = settings.pacs
    if not (pacs.ae_title and pacs.host and pacs.port):
        raise ConfigError("set BRIDGE_PACS__AE_TITLE, __HOST and __PORT (or __DICOMWEB_URL)")
    ae = AE(ae_title=settings.dimse.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = pacs.timeout
    for cx in contexts:
        ae.add_requested_context(cx, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    from bridge.peers.pacs_dimse import dimse_tls_args

    assoc = ae.associate(
        pacs.host, pacs.port, ae_title=pacs.ae_title, tls_args=dimse_tls_args(settings)
    )
    if assoc.is_rejected:
        raise TransientForwardError(
            "the PACS rejected the association: register the bridge's AE title, host and port "
            "in the PACS",
            calling_ae=settings.dimse.ae_title,
        )
    if not assoc.is_established:
        raise TransientForwardError("the PACS is unreachable over DICOM", host=pacs.host)
    return assoc


def check_target_dimse(settings: Settings, study_uid: str, patient_id: str) -> None:
    assoc = _associate(settings, [StudyRootQueryRetrieveInformationModelFind])
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        query.PatientID = ""
        ids: set[str] = set()
        for status, ident in assoc.send_c_find(  # type: ignore[attr-defined]
            query, StudyRootQueryRetrieveInformationModelFind
        ):
            if not status:
                raise TransientForwardError(
                    "the PACS refused or dropped the C-FIND: allow queries from the bridge's AE "
                    "title (register it as a modality in the PACS)",
                    calling_ae=settings.dimse.ae_title,
                )
            code = int(status.Status)
            if code in _PENDING and ident is not None:
                ids.add(str(ident.get("PatientID", "")))
            elif code != 0x0000:
                raise TransientForwardError("C-FIND to the PACS failed", status=f"0x{code:04X}")
    finally:
        assoc.release()  # type: ignore[attr-defined]
    if not ids:
        raise ReturnSafetyError("the original study is not in the PACS")
    if ids != {patient_id}:
        raise ReturnSafetyError("the PACS study belongs to another Patient ID")


def store_report_dimse(settings: Settings, path: Path, study_uid: str, patient_id: str) -> None:
    check_target_dimse(settings, study_uid, patient_id)
    ds = dcmread(path)
    assoc = _associate(settings, [str(ds.SOPClassUID)])
    try:
        cx = [c for c in assoc.accepted_contexts if c.abstract_syntax == ds.SOPClassUID]  # type: ignore[attr-defined]
        if not cx:
            raise PermanentForwardError(
                "the PACS does not accept this SOP class: enable SR / Key Object storage",
                sop_class=str(ds.SOPClassUID),
            )
        status = assoc.send_c_store(ds)  # type: ignore[attr-defined]
    finally:
        assoc.release()  # type: ignore[attr-defined]
    if not status:
        raise TransientForwardError("C-STORE to the PACS got no answer")
    code = int(status.Status)
    if code == 0x0000 or code & 0xF000 == 0xB000:  # success, or warning (stored)
        return
    if code & 0xFF00 == 0xA700:
        raise TransientForwardError("the PACS is out of resources", status=f"0x{code:04X}")
    raise PermanentForwardError("the PACS refused the report", status=f"0x{code:04X}")
