from __future__ import annotations

from pathlib import Path

import requests
from pydicom import dcmread
from pydicom.dataset import Dataset

from tests.support.orthanc import Orthanc


def study_instances(orthanc: Orthanc, study_uid: str) -> list[Dataset]:
    """Download every instance of a study from Orthanc (the archive's view)."""
    found = requests.post(
        f"{orthanc.url}/tools/find",
        json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}},
        timeout=60,
    ).json()
    out = []
    for oid in found:
        r = requests.get(f"{orthanc.url}/instances/{oid}/file", timeout=60)
        r.raise_for_status()
        from io import BytesIO

        out.append(dcmread(BytesIO(r.content)))
    return out


def count_study(orthanc: Orthanc, study_uid: str) -> int:
    found = requests.post(
        f"{orthanc.url}/tools/find",
        json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}},
        timeout=60,
    ).json()
    return len(found)


def original(paths: list[Path]) -> dict[str, Dataset]:
    return {str(ds.SOPInstanceUID): ds for ds in (dcmread(p) for p in paths)}
