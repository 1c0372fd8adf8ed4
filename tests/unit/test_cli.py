"""``bridge deid`` offline, as an administrator checks a sample before going live."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pydicom import dcmread

from bridge.testing.sample import make_study
from tests.helpers import leaks

BRIDGE = str(Path(sys.executable).with_name("bridge"))


def test_bridge_deid_offline(tmp_path):
    study = make_study(tmp_path / "in", 3, rows=8, columns=8)
    (tmp_path / "in" / "README.txt").write_text("not dicom")
    env = {"BRIDGE_DEID__SECRET": "offline-secret-0123456789", "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [BRIDGE, "deid", str(tmp_path / "in"), str(tmp_path / "out"), "--profile", "reading"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "3 de-identified, 1 held" in r.stdout and "README.txt" in r.stderr
    outs = sorted((tmp_path / "out").iterdir())
    assert len(outs) == 3
    identity = [p for p in study.planted if p not in ("101502", "PL-OCCUPATION")]
    for p in outs:
        assert leaks(dcmread(p), identity) == []

    r = subprocess.run(
        [BRIDGE, "deid", str(tmp_path / "in"), str(tmp_path / "o2")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "BRIDGE_DEID__SECRET" in r.stderr
