"""``bridge deid`` offline, as an administrator checks a sample before going live."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pydicom import dcmread

from bridge.sample import make_study
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
    assert "3 de-identified, 0 held, 1 not DICOM" in r.stdout and "README.txt" in r.stderr
    outs = sorted((tmp_path / "out").iterdir())
    assert len(outs) == 3
    identity = study.identity
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


def test_deid_score_passes_clean_output_and_fails_leaky_output(tmp_path):
    make_study(tmp_path / "in", 3, rows=8, columns=8)
    env = {"BRIDGE_DEID__SECRET": "offline-secret-0123456789", "PATH": "/usr/bin:/bin"}
    for profile in ("basic", "reading"):
        out = tmp_path / f"out-{profile}"
        subprocess.run(
            [BRIDGE, "deid", str(tmp_path / "in"), str(out), "--profile", profile],
            check=True,
            capture_output=True,
            env=env,
            cwd=tmp_path,
        )
        r = subprocess.run(
            [BRIDGE, "deid-score", str(tmp_path / "in"), str(out)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stdout
        assert "files scored: 3" in r.stdout and "verdict: PASS" in r.stdout
    # A leaky "de-identification": the right UIDs, but a name and an address left in.
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    for p in sorted((tmp_path / "out-basic").iterdir()):
        ds = dcmread(p)
        ds.ImageComments = "seen with PLANTEDFAMILY at 17 Plantedstreet Road"
        ds.save_as(leaky / p.name, enforce_file_format=True)
    r = subprocess.run(
        [BRIDGE, "deid-score", str(tmp_path / "in"), str(leaky)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 1 and "verdict: FAIL" in r.stdout
    assert "PatientName:" in r.stdout and "PatientAddress:" in r.stdout


def test_building_the_parser_leaves_prometheus_client_unimported():
    """`bridge serve` points prometheus_client at the multiprocess directory before its first
    import; a command module importing the pipeline at its top would silently break /metrics."""
    import subprocess
    import sys

    code = (
        "import sys; from bridge.cli import parser; parser(); "
        "sys.exit('prometheus_client' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
