"""Start a throw-away Orthanc (Debian's package) on loopback ports, for tests and the demo."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ORTHANC_BINARY = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins")


#: Listening ports come from below the kernel's ephemeral range (32768-60999 here), so that no
#: outgoing connection is handed a port chosen for a server that has not bound it yet, and from
#: a block of their own per pytest-xdist worker, so that two workers never choose the same one.
PORT_BASE = 20000
PORT_BLOCK = 1500
_ports = itertools.count()


def free_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    base = PORT_BASE + (index % 8) * PORT_BLOCK
    for _ in range(PORT_BLOCK):
        port = base + next(_ports) % PORT_BLOCK
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken by something else on this machine
            return port
    raise RuntimeError(f"no free port in {base}-{base + PORT_BLOCK - 1}")


def dicomweb_plugin() -> str | None:
    for d in PLUGIN_DIRS:
        p = Path(d) / "libOrthancDicomWeb.so"
        if p.exists():
            return str(p)
    return None


@dataclass
class Orthanc:
    name: str
    workdir: Path
    aet: str = "ORTHANC"
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    modalities: dict[str, list[Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def config(self) -> dict[str, Any]:
        plugin = dicomweb_plugin()
        cfg: dict[str, Any] = {
            "Name": self.name,
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpBindAddress": "127.0.0.1" if False else None,
            "DicomCheckCalledAet": False,
            "DicomModalities": self.modalities,
            "Plugins": [plugin] if plugin else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "StudiesMetadata": "Full"},
            "StableAge": 2,
            "ConcurrentJobs": 4,
            "HttpTimeout": 60,
            "SaveJobs": False,
            # A peer in a test, not what is tested: no fsync per stored file (the kernel's
            # writeback was a fifth of the suite's CPU). Nothing here survives a power cut,
            # and no test needs it to; a stopped or killed Orthanc keeps what it stored.
            "SyncStorageArea": False,
        }
        cfg.pop("HttpBindAddress")
        cfg.update(self.extra)
        return cfg

    def start(self, timeout: float = 30.0) -> Orthanc:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.workdir / "orthanc.json"
        cfg_path.write_text(json.dumps(self.config(), indent=2))
        env = dict(os.environ, TCP_NODELAY="1")
        log = (self.workdir / "orthanc.log").open("ab")
        self.process = subprocess.Popen(
            [ORTHANC_BINARY, str(cfg_path)], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc {self.name} exited; see {self.workdir}/orthanc.log")
            try:
                if requests.get(f"{self.url}/system", timeout=1).status_code in (200, 401):
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()  # never leave a half-started server behind
        raise RuntimeError(f"Orthanc {self.name} did not start in {timeout}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    # -- convenience for tests --------------------------------------------------------------
    def get(self, path: str, **kw: Any) -> Any:
        r = requests.get(f"{self.url}{path}", timeout=60, **kw)
        r.raise_for_status()
        return r.json()

    def instances(self) -> list[str]:
        return list(self.get("/instances"))

    def reset(self) -> None:
        for pid in self.get("/patients"):
            requests.delete(f"{self.url}/patients/{pid}", timeout=60).raise_for_status()
