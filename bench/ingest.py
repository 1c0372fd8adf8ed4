"""C-STORE ingest, acknowledged: the bridge next to Orthanc and dcmtk's storescp.

The same sender (storescu, one association, TCP_NODELAY=1) sends the same generated CT study
to each receiver, started fresh for each run. The bridge acknowledges an instance only once it
is fsynced in the spool and recorded in the state store; storescp and Orthanc do not fsync.
The bridge runs as it would in production (`bridge serve`, its worker process de-identifying
and forwarding while the study arrives), with the burned-in scan off so that the workers'
load is the header path (the scan's cost is measured in bench/deid.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

# the test suite's peers (Orthanc, storescu, the bridge as a process) live in tests/support
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.orthanc import Orthanc, free_port  # noqa: E402
from tests.support.peers import BridgeProcess, storescu  # noqa: E402

SECRET = "bench-secret-0123456789abcdef"  # noqa: S105 - a benchmark fixture


def timed_storescu(port: int, files: list[Path], aet: str) -> float:
    t = time.perf_counter()
    out = storescu(port, files, aet=aet)
    elapsed = time.perf_counter() - t
    acked = out.stdout.count("Received Store Response (Success)")
    if acked != len(files):
        raise RuntimeError(f"{aet}: {acked} of {len(files)} acknowledged")
    return elapsed


def storescp(work: Path, files: list[Path]) -> float:
    out = work / "storescp"
    out.mkdir(parents=True)
    port = free_port()
    env = dict(os.environ, TCP_NODELAY="1")
    proc = subprocess.Popen(
        ["storescp", "-od", str(out), "-aet", "STORESCP", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if (
                subprocess.run(
                    ["echoscu", "-aec", "STORESCP", "127.0.0.1", str(port)],
                    capture_output=True,
                    env=env,
                    check=False,
                ).returncode
                == 0
            ):
                break
            time.sleep(0.05)
        return timed_storescu(port, files, "STORESCP")
    finally:
        proc.terminate()
        proc.wait(10)


def orthanc(work: Path, files: list[Path]) -> float:
    o = Orthanc("INGEST", work / "orthanc", aet="INGEST").start()
    try:
        return timed_storescu(o.dicom_port, files, "INGEST")
    finally:
        o.stop()


def bridge_env(reading: Orthanc, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "BRIDGE_DEID__SECRET": SECRET,
        "BRIDGE_READING__DICOMWEB_URL": reading.dicomweb,
        "BRIDGE_LOG_LEVEL": "info",
        "BRIDGE_SPOOL__MIN_FREE_BYTES": "0",
        "BRIDGE_DEID__PIXELS__DEFAULT": "pass",
    }
    env.update(extra or {})
    return env


def wait_workers(b: BridgeProcess, count: int = 1, timeout: float = 60) -> None:
    """Until ``count`` worker processes have started (imports and the text detector loaded):
    their start-up must not be timed, nor compete with the timed part for the CPU."""
    deadline = time.monotonic() + timeout
    while b.log().count('"worker.started"') < count:
        if time.monotonic() > deadline:
            raise RuntimeError("the worker process did not start")
        time.sleep(0.1)


def bridge(work: Path, files: list[Path], pipeline: bool = True) -> float:
    """``pipeline=False``: `serve --no-workers`, the listener alone (nothing de-identified or
    forwarded meanwhile), to tell its own speed from the competition for the CPU."""
    reading = Orthanc("READING", work / "reading", aet="READING").start()
    args = ("serve",) if pipeline else ("serve", "--no-workers")
    b = BridgeProcess(work / "bridge", bridge_env(reading), args=args)
    b.start()
    try:
        if pipeline:
            wait_workers(b)
        return timed_storescu(b.dimse_port, files, "SECONDOPINION")
    finally:
        b.stop()
        reading.stop()
