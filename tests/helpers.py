"""Assertions a user would make on de-identified objects."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from bridge.deid.score import text_values


def add_user(bridge: Any, name: str, password: str, role: str = "viewer") -> None:
    """``bridge user add`` as an administrator runs it, the password on standard input."""
    from tests.support.peers import BRIDGE_BIN

    out = subprocess.run(
        [BRIDGE_BIN, "user", "add", name, "--role", role, "--password-stdin"],
        input=password + "\n",
        env=bridge.full_env(),
        cwd=bridge.workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def leaks(ds: Dataset, planted: Iterable[str]) -> list[str]:
    """Planted values found anywhere in ``ds`` (case-insensitive substring)."""
    planted_l = [p.lower() for p in planted if p]
    found = []
    for tag, text in text_values(ds):
        low = text.lower()
        for p in planted_l:
            if p in low:
                found.append(f"{tag}: {p!r}")
    return found


JAVA = [
    "java",
    # The client compiler alone and one GC thread: half the CPU of the default JVM for a
    # validation that runs once per process (the suite runs on two cores shared by many tests).
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseSerialGC",
    "-Djdk.xml.xpathExprOpLimit=0",
    "-Djdk.xml.xpathExprGrpLimit=0",
    "-Djdk.xml.xpathTotalOpLimit=0",
    "-cp",
    "/usr/share/java/pixelmed.jar",
    "com.pixelmed.validate.DicomSRValidator",
]


def validate_sr(path: Path) -> None:
    """dsrdump, dciodvfy and PixelMed's DicomSRValidator: zero errors."""
    dump = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True)
    assert dump.returncode == 0, dump.stderr
    assert "E:" not in dump.stderr
    ciod = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    errors = [ln for ln in (ciod.stdout + ciod.stderr).splitlines() if ln.startswith("Error")]
    assert errors == []
    pix = subprocess.run([*JAVA, str(path)], capture_output=True, text=True, timeout=300)
    out = pix.stdout + pix.stderr
    assert "Root Template Validation Complete" in out, out
    assert "Error" not in out, out
