"""SECONDOPINION: a second-opinion DICOM bridge between a hospital PACS and a reading service."""

__version__ = "0.1.0"
