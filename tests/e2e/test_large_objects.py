"""A large multi-frame instance goes through streamed: received to disk, header de-identified,
pixel data copied by chunks, STOW-RS body read from the spool. The bench (docs/bench.md) shows
the memory with a 1 GiB object; here a 48 MiB one proves the path in the suite's time."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests
from pydicom import dcmread

from bridge.deid.pseudonyms import Pseudonymizer
from bridge.sample import make_large_instance
from conftest import DEID_SECRET, bridge_env
from tests.support.orthanc import Orthanc
from tests.support.peers import acknowledged, storescu

pytestmark = pytest.mark.e2e


def _pixel_digest(path: Path) -> str:
    return hashlib.sha256(dcmread(path).PixelData).hexdigest()


def test_a_large_instance_is_streamed_through_unchanged_pixels_clean_header(
    tmp_path: Path, reading: Orthanc, make_bridge
) -> None:
    src = tmp_path / "large.dcm"
    study_uid = make_large_instance(
        src, mib=48, patient_name="STREAM^PLANTED", patient_id="PLANT-48"
    )
    b = make_bridge(
        bridge_env(
            reading,
            None,
            BRIDGE_DEID__STREAM_ABOVE_BYTES=str(8 * 1024 * 1024),
            BRIDGE_DEID__PIXELS__MAX_BYTES=str(16 * 1024 * 1024),  # too large to scan: CT passes
        )
    )
    out = storescu(b.dimse_port, [src])
    assert len(acknowledged(out.stdout)) == 1
    b.wait_forwarded(1, timeout=180)
    assert '"deid.streamed"' in b.log()  # the header-only path, not a whole read

    pseudo_study = Pseudonymizer(DEID_SECRET.encode()).uid(study_uid)
    (found,) = requests.post(
        f"{reading.url}/tools/find",
        json={"Level": "Instance", "Query": {"StudyInstanceUID": pseudo_study}},
        timeout=60,
    ).json()
    got = tmp_path / "got.dcm"
    with requests.get(f"{reading.url}/instances/{found}/file", stream=True, timeout=120) as r:
        r.raise_for_status()
        with got.open("wb") as fh:
            for chunk in r.iter_content(1 << 20):
                fh.write(chunk)
    assert _pixel_digest(got) == _pixel_digest(src)
    header = dcmread(got, stop_before_pixels=True)
    assert header.PatientIdentityRemoved == "YES"
    text = got.read_bytes()[:65536]
    assert b"STREAM" not in text and b"PLANT-48" not in text
    assert str(header.StudyInstanceUID) == pseudo_study
