"""Records as the listener makes them, for tests that fill a state store directly."""

from __future__ import annotations

from bridge.domain.records import Received

CT = "1.2.840.10008.5.1.4.1.1.2"


def received(
    study: str, series: str, sop: str, spool_name: str, size: int = 10, question: str = ""
) -> Received:
    """A CT instance pushed by AE ``A`` to ``B``, routed to a general, routine reading."""
    return Received(
        study_uid=study,
        series_uid=series,
        sop_instance_uid=sop,
        sop_class_uid=CT,
        modality="CT",
        size_bytes=size,
        spool_name=spool_name,
        calling_aet="A",
        called_aet="B",
        subspecialty="general",
        priority="routine",
        question=question,
    )
