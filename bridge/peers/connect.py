"""The PACS client the settings ask for: DICOMweb (QIDO-RS search, WADO-RS retrieve) when
``pacs.dicomweb_url`` is set and ``pacs.protocol`` is not ``dimse``; otherwise DIMSE (C-FIND,
then C-MOVE to the bridge's own AE title or C-GET, ``pacs.dimse_retrieve``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bridge.config import DimseSettings, PacsSettings
from bridge.domain.errors import ConfigError
from bridge.peers.pacs import PacsClient
from bridge.peers.pacs_dicomweb import DicomWebPacs
from bridge.peers.pacs_dimse import DimsePacs


def make_pacs(pacs: PacsSettings, dimse: DimseSettings, new_file: Callable[[], Path]) -> PacsClient:
    """``dimse``: the bridge's own AE (calling AE title, C-MOVE destination, PDU size);
    ``new_file``: where a retrieved instance may be written (the spool's own temp area)."""
    if pacs.dicomweb_url and pacs.protocol != "dimse":
        return DicomWebPacs(pacs, new_file)
    if pacs.ae_title and pacs.host and pacs.port and pacs.protocol != "dicomweb":
        return DimsePacs(pacs, dimse, new_file)
    raise ConfigError(
        "no way to reach the PACS: set BRIDGE_PACS__DICOMWEB_URL, or BRIDGE_PACS__AE_TITLE, "
        "__HOST and __PORT"
    )
