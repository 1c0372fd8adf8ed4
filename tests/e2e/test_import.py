"""Patient media: a disc folder with a DICOMDIR, a ZIP download without one, bad archives."""

from __future__ import annotations

import subprocess
import zipfile

import pytest
from pydicom.fileset import FileSet

from bridge.sample import make_study
from conftest import bridge_env
from tests.e2e.conftest import study_instances
from tests.helpers import leaks
from tests.support.peers import BRIDGE_BIN

pytestmark = pytest.mark.e2e


def _cli(bridge, *args):
    return subprocess.run(
        [BRIDGE_BIN, *args],
        env=bridge.full_env(),
        cwd=bridge.workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow(45)
def test_import_a_disc_and_a_zip(tmp_path, reading, make_bridge):
    bridge = make_bridge(bridge_env(reading, None, BRIDGE_SUBMIT__UPLOAD_MAX_BYTES="2000000"))
    # A disc: two studies behind a DICOMDIR, plus the viewer software discs carry.
    a = make_study(tmp_path / "a", 3, rows=64, columns=64, accession="ACC-DISC-A")
    b = make_study(tmp_path / "b", 2, rows=64, columns=64, accession="ACC-DISC-B")
    fs = FileSet()
    for p in a.paths + b.paths:
        fs.add(p)
    disc = tmp_path / "disc"
    fs.write(disc)
    (disc / "VIEWER").mkdir()
    (disc / "VIEWER" / "viewer.exe").write_bytes(b"MZ" + b"\0" * 300)
    (disc / "AUTORUN.INF").write_text("[autorun]\nopen=VIEWER\\viewer.exe\n")

    out = _cli(bridge, "import", str(disc), "--list")
    assert out.returncode == 0, out.stderr
    assert "2 studies found (from the DICOMDIR)" in out.stdout
    assert "2 file(s) not DICOM" in out.stdout and a.study_uid in out.stdout

    out = _cli(
        bridge, "import", str(disc), "--question", "Fracture healed?", "--subspecialty", "msk"
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("submitted") == 2
    for study, n in ((a, 3), (b, 2)):
        case = bridge.wait_case(
            lambda c, s=study, n=n: (
                c["original_study_instance_uid"] == s.study_uid
                and c["state"] == "forwarded"
                and c["instances"]["forwarded"] == n
            )
        )
        assert case["source"] == "import" and case["subspecialty"] == "msk"
        for ds in study_instances(reading, case["pseudonymized_study_instance_uid"]):
            assert leaks(ds, study.identity) == []
    # The same disc again while its cases are open: refused, named.
    out = _cli(bridge, "import", str(disc), "--question", "Again?")
    assert out.returncode == 1 and "already open" in out.stderr

    # A ZIP download without a DICOMDIR: walked; junk counted; a broken file named.
    c = make_study(tmp_path / "c", 2, rows=64, columns=64, accession="ACC-ZIP-C")
    broken = tmp_path / "IM_BROKEN.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in c.paths:
            zf.write(p, f"study/{p.name}")
        zf.write(broken, "study/IM_BROKEN.dcm")
        zf.writestr("README.txt", "Images of your examination")
    out = _cli(bridge, "import", str(archive), "--question", "Progression?")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 study found;" in out.stdout and "1 file(s) not DICOM" in out.stdout
    assert "malformed: study/IM_BROKEN.dcm" in out.stderr
    bridge.wait_case(
        lambda x: x["original_study_instance_uid"] == c.study_uid and x["state"] == "forwarded"
    )

    # Archives that try to escape their folder, and nothing to import, are refused clearly.
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../etc/cron.d/x", "* * * * * root true")
    out = _cli(bridge, "import", str(evil), "--question", "Q")
    assert out.returncode == 2 and "path outside its folder" in out.stderr
    out = _cli(bridge, "import", str(tmp_path / "missing"), "--question", "Q")
    assert out.returncode == 2 and "no such file or folder" in out.stderr


def test_upload_a_zip_through_the_api(tmp_path, reading, make_bridge):
    import requests

    bridge = make_bridge(bridge_env(reading, None, BRIDGE_SUBMIT__UPLOAD_MAX_BYTES="2000000"))
    auth = {"Authorization": f"Bearer {bridge.token}"}
    study = make_study(tmp_path / "u", 2, rows=64, columns=64, accession="ACC-UPLOAD")
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in study.paths:
            zf.write(p, f"DICOM/{p.name}")
        zf.writestr("viewer/setup.exe", b"MZ" + b"\0" * 100)
    url = f"{bridge.url}/api/v1/imports"
    q = {"question": "Second look at PLANTEDFAMILY please", "subspecialty": "chest"}
    zip_type = {**auth, "Content-Type": "application/zip"}

    r = requests.post(url, params=q, data=archive.read_bytes(), headers=zip_type, timeout=120)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["not_dicom"] == 1 and body["malformed"] == []
    (entry,) = body["cases"]
    assert entry["study_instance_uid"] == study.study_uid and entry["instances"] == 2
    case = bridge.wait_case(lambda c: c["id"] == entry["case_id"] and c["state"] == "forwarded")
    assert case["source"] == "import" and case["submitted_by"] == "api"
    assert "PLANTEDFAMILY" not in case["question"]

    # Refusals: not a ZIP, too large, no question, not authenticated.
    r = requests.post(url, params=q, data=b"not a zip", headers=zip_type, timeout=30)
    assert r.status_code == 415 and "not a ZIP" in r.json()["detail"]
    r = requests.post(url, params=q, data=b"x", headers={**auth, "Content-Type": "text/plain"})
    assert r.status_code == 415
    r = requests.post(url, params=q, data=b"\0" * 2_100_000, headers=zip_type, timeout=30)
    assert r.status_code == 413 and "UPLOAD_MAX_BYTES" in r.json()["detail"]
    r = requests.post(url, params={"question": ""}, data=archive.read_bytes(), headers=zip_type)
    assert r.status_code == 422
    r = requests.post(url, params=q, data=archive.read_bytes(), timeout=30)
    assert r.status_code == 401
    assert list((bridge.workdir / "data" / "spool" / "tmp").iterdir()) == []
