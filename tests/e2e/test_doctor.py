"""``bridge doctor`` against real peers: all good, then broken settings named with a hint."""

from __future__ import annotations

import subprocess

import pytest

from conftest import bridge_env
from tests.support.orthanc import free_port
from tests.support.peers import BRIDGE_BIN

pytestmark = pytest.mark.e2e


def _doctor(bridge, **env):
    return subprocess.run(
        [BRIDGE_BIN, "doctor"],
        env={**bridge.full_env(), **env},
        cwd=bridge.workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _line(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(name))


def test_doctor_passes_then_names_what_is_wrong(hospital, reading, webhook, make_bridge):
    bridge = make_bridge(
        bridge_env(
            reading,
            webhook,
            BRIDGE_PACS__DICOMWEB_URL=hospital.dicomweb,
            BRIDGE_PACS__AE_TITLE=hospital.aet,
            BRIDGE_PACS__HOST="127.0.0.1",
            BRIDGE_PACS__PORT=str(hospital.dicom_port),
        )
    )
    out = _doctor(bridge)
    assert out.returncode == 0, out.stdout + out.stderr
    for name, verdict in (
        ("required settings", "ok"),
        ("state store", "ok"),
        ("spool permissions", "ok"),
        ("DICOM listener port", "ok"),
        ("HTTP port", "ok"),
        ("PACS C-ECHO", "ok"),
        ("PACS QIDO-RS", "ok"),
        ("reading archive QIDO-RS", "ok"),
        ("reading archive STOW-RS", "ok"),
        ("burned-in text detector", "ok"),
    ):
        assert f"  {verdict}" in _line(out.stdout, name), _line(out.stdout, name)
    assert "in use by a running bridge" in _line(out.stdout, "DICOM listener port")

    dead = free_port()
    out = _doctor(
        bridge,
        BRIDGE_READING__DICOMWEB_URL=f"http://127.0.0.1:{dead}/dicom-web",
        BRIDGE_PACS__AE_TITLE="NOTREGISTERED",
        BRIDGE_PACS__PORT=str(dead),
        BRIDGE_DEID__SECRET="short",
    )
    assert out.returncode == 1
    assert "fail" in _line(out.stdout, "reading archive QIDO-RS")
    assert "BRIDGE_READING__DICOMWEB_URL" in _line(out.stdout, "reading archive QIDO-RS")
    assert "BRIDGE_PACS__HOST/__PORT" in _line(out.stdout, "PACS C-ECHO")
    assert "BRIDGE_DEID__SECRET" in _line(out.stdout, "required settings")
    assert "short" not in out.stdout  # a secret is never printed
