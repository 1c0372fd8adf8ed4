"""Static checks of deploy/: the systemd unit, the Dockerfile, the compose file and the env
examples. (There is no Docker daemon or systemd PID 1 on the test machine: the image is not
built and the unit not started here; these checks catch what can be caught without them.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bridge.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _is_setting(var: str) -> bool:
    """BRIDGE_A__B_C names settings.a.b_c."""
    model: type = Settings
    parts = var.removeprefix("BRIDGE_").lower().split("__")
    for i, part in enumerate(parts):
        fields = model.model_fields  # type: ignore[attr-defined]
        if part not in fields:
            return False
        ann = fields[part].annotation
        if i < len(parts) - 1:
            if not (isinstance(ann, type) and hasattr(ann, "model_fields")):
                return False
            model = ann
    return True


def _bridge_vars(text: str) -> set[str]:
    return set(re.findall(r"\b(BRIDGE_[A-Z0-9_]+)", text)) - {"BRIDGE_CONFIG_FILE"}


def test_every_bridge_variable_in_deploy_is_a_real_setting():
    files = [
        *DEPLOY.glob("systemd/*"),
        *DEPLOY.glob("docker/*"),
    ]
    found = {v: f.name for f in files for v in _bridge_vars(f.read_text())}
    assert found, "no settings found in deploy/"
    unknown = {v: f for v, f in found.items() if not _is_setting(v)}
    assert unknown == {}


def test_systemd_unit_is_valid_and_hardened():
    unit = DEPLOY / "systemd" / "secondopinion-bridge.service"
    text = unit.read_text()
    for key in (
        "User=secondopinion",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "StateDirectoryMode=0700",
        "UMask=0077",
        "KillSignal=SIGTERM",
        "EnvironmentFile=/etc/secondopinion/bridge.env",
    ):
        assert key in text, key
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    out = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    # The only complaint allowed: the bridge is not installed in /opt on the test machine.
    problems = [
        line
        for line in (out.stdout + out.stderr).splitlines()
        if line.strip() and "/opt/secondopinion/venv/bin/bridge is not executable" not in line
    ]
    assert problems == []


def test_dockerfile_runs_unprivileged_with_a_healthcheck():
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert re.search(r"^EXPOSE\s+11112\s+8080", text, flags=re.M)
    assert "STOPSIGNAL SIGTERM" in text
    for env in re.findall(r"^ENV\s+(.+?)(?:\n\S|\Z)", text, flags=re.M | re.S):
        assert not re.search(r"SECRET|TOKEN|PASSWORD", env), "no secret baked into the image"
    for src in re.findall(r"^COPY\s+(.+)\s+\S+$", text, flags=re.M):
        for path in src.split():
            assert (ROOT / path).exists(), path


def test_compose_wires_the_bridge_to_its_pacs():
    doc = yaml.safe_load((DEPLOY / "docker" / "compose.yaml").read_text())
    bridge, orthanc = doc["services"]["bridge"], doc["services"]["orthanc"]
    assert (
        DEPLOY / "docker" / Path(bridge["build"]["context"]) / bridge["build"]["dockerfile"]
    ).is_file()
    env = bridge["environment"]
    assert env["BRIDGE_PACS__HOST"] == "orthanc"
    aet = orthanc["environment"]["ORTHANC__DICOM_AET"]
    assert env["BRIDGE_PACS__AE_TITLE"] == aet and aet in env["BRIDGE_DIMSE__ALLOWED_CALLING_AETS"]
    modalities = yaml.safe_load(orthanc["environment"]["ORTHANC__DICOM_MODALITIES"])
    assert modalities["SECONDOPINION"] == ["SECONDOPINION", "bridge", 11112]
    assert "11112:11112" in bridge["ports"]
    assert bridge["env_file"] == "bridge.env"  # secrets stay out of the compose file
    assert "bridge.env" in (ROOT / ".dockerignore").read_text()
