"""Small DICOM helpers shared by the stages: the bridge's own identity in file meta."""

from __future__ import annotations

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID

from bridge import __version__

#: The bridge's own UID (Implementation Class UID), a fixed value under 2.25.
IMPLEMENTATION_CLASS_UID = UID("2.25.246437372619127430470937393651452371262")
IMPLEMENTATION_VERSION_NAME = "SOBRIDGE_" + __version__.replace(".", "")[:7]


def set_file_meta(ds: Dataset, transfer_syntax: str) -> None:
    """Give ``ds`` fresh file meta naming its own SOP Class/Instance and the bridge."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta
