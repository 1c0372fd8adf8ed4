"""Real senders: a PACS (Orthanc) pushing a study, and compressed/unusual transfer syntaxes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless

from bridge.deid.pseudonyms import Pseudonymizer
from bridge.sample import make_study
from conftest import DEID_SECRET, bridge_env
from tests.e2e.conftest import study_instances
from tests.helpers import leaks
from tests.support.peers import acknowledged, storescu

pytestmark = pytest.mark.e2e


def test_pacs_pushes_study_to_the_bridge(tmp_path, hospital, reading, make_bridge):
    bridge = make_bridge(
        bridge_env(reading, None, BRIDGE_DIMSE__ALLOWED_CALLING_AETS='["HOSPITALPACS"]')
    )
    study = make_study(tmp_path / "pacs", 12, rows=128, columns=128)
    for p in study.paths:
        r = requests.post(f"{hospital.url}/instances", data=p.read_bytes(), timeout=30)
        r.raise_for_status()
    orthanc_study = r.json()["ParentStudy"]
    requests.put(
        f"{hospital.url}/modalities/SECONDOPINION",
        json={"AET": "SECONDOPINION", "Host": "127.0.0.1", "Port": bridge.dimse_port},
        timeout=30,
    ).raise_for_status()
    requests.post(
        f"{hospital.url}/modalities/SECONDOPINION/store",
        json={"Resources": [orthanc_study], "Synchronous": True},
        timeout=120,
    ).raise_for_status()
    case = bridge.wait_forwarded(12)
    assert case["calling_ae_title"] == "HOSPITALPACS"
    got = study_instances(reading, case["pseudonymized_study_instance_uid"])
    assert len(got) == 12
    assert all(leaks(ds, study.identity) == [] for ds in got)


def _convert(tool: list[str], src: Path, dst: Path) -> Path:
    subprocess.run([*tool, str(src), str(dst)], check=True, capture_output=True)
    return dst


def test_transfer_syntaxes_pass_through_undecoded(tmp_path, reading, make_bridge):
    bridge = make_bridge(bridge_env(reading, None))
    study = make_study(tmp_path / "ts", 8, rows=64, columns=64, n_series=1)
    conv = tmp_path / "conv"
    conv.mkdir()
    files = [
        _convert(["dcmcjpeg"], study.paths[0], conv / "jpeg-lossless.dcm"),
        _convert(["dcmcjpeg", "+ee"], study.paths[1], conv / "jpeg-extended.dcm"),
        _convert(["dcmcrle"], study.paths[2], conv / "rle.dcm"),
        _convert(["dcmcjpls"], study.paths[3], conv / "jpeg-ls.dcm"),
        _convert(["dcmconv", "+td"], study.paths[4], conv / "deflate.dcm"),
        _convert(["dcmconv", "+tb"], study.paths[5], conv / "big-endian.dcm"),
        _convert(["dcmconv", "+ti"], study.paths[6], conv / "implicit.dcm"),
    ]
    # JPEG 2000: no encoder here; the bridge never decodes, so opaque fragments suffice.
    ds = dcmread(study.paths[7])
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(range(256)) * 4 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.save_as(conv / "j2k.dcm", enforce_file_format=True)
    files.append(conv / "j2k.dcm")

    sent = {str(dcmread(f).SOPInstanceUID): dcmread(f) for f in files}
    syntaxes = {str(d.file_meta.TransferSyntaxUID) for d in sent.values()}
    assert len(syntaxes) == 8
    # As a modality would: propose each object's own transfer syntax.
    flags = ["-xs", "-xx", "-xr", "-xt", "-xd", "-xb", "-xi", "-xv"]
    for f, flag in zip(files, flags, strict=True):
        out = storescu(bridge.dimse_port, [f], extra=(flag,))
        assert len(acknowledged(out.stdout)) == 1, out.stdout
        line = next(ln for ln in out.stdout.splitlines() if "Converting transfer syntax" in ln)
        before, after = line.split(":", 2)[-1].split("->")
        assert before.strip() == after.strip(), line  # sent as is, not transcoded by storescu
    case = bridge.wait_forwarded(8)
    got = study_instances(reading, case["pseudonymized_study_instance_uid"])
    assert len(got) == 8
    pseudo = Pseudonymizer(DEID_SECRET.encode())
    by_pseudo = {pseudo.uid(uid): src for uid, src in sent.items()}
    for ds in got:
        src = by_pseudo[str(ds.SOPInstanceUID)]
        assert ds.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID
        assert ds.PixelData == src.PixelData
        assert leaks(ds, study.identity) == []
