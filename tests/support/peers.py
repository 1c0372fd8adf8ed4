"""Real peers for tests and the demo: the bridge as a subprocess, a webhook receiver, storescu."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from tests.support.orthanc import free_port

BRIDGE_BIN = str(Path(sys.executable).with_name("bridge"))


@dataclass
class BridgeProcess:
    """``bridge serve`` in a subprocess, configured only through its environment."""

    workdir: Path
    env: dict[str, str]
    token: str = "test-token-0123456789"  # noqa: S105 - a test fixture
    dimse_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    #: The CA that signed the bridge's HTTPS certificate (set: the bridge speaks HTTPS).
    ca: str | None = None
    #: The command line after ``bridge`` (``serve --no-workers``: listener and HTTP only).
    args: tuple[str, ...] = ("serve",)
    #: Instead of ``bridge``: another program taking ``args`` (a test driver).
    command: tuple[str, ...] = (BRIDGE_BIN,)

    @property
    def url(self) -> str:
        scheme = "https" if self.ca else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    @property
    def verify(self) -> bool | str:
        return self.ca or True

    @property
    def log_path(self) -> Path:
        return self.workdir / "bridge.log"

    def full_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        env.update(
            BRIDGE_DATA_DIR=str(self.workdir / "data"),
            BRIDGE_API_TOKEN=self.token,
            BRIDGE_DIMSE__PORT=str(self.dimse_port),
            BRIDGE_HTTP__PORT=str(self.http_port),
            BRIDGE_LOG_FORMAT="json",
            BRIDGE_LOG_LEVEL="debug",
        )
        env.update(self.env)
        return env

    def start(self, timeout: float = 30.0) -> BridgeProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*self.command, *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.full_env(),
            cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bridge exited with {self.process.returncode}: {self.log()}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=1, verify=self.verify).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("bridge did not become healthy")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def worker(self, index: int, **env: str) -> subprocess.Popen[bytes]:
        """``bridge worker --index N`` with this bridge's settings (plus ``env``): another
        worker process, of this node or (with another BRIDGE_NODE_ID) of another node."""
        log = (self.workdir / f"worker-{index}.log").open("ab")
        return subprocess.Popen(
            [BRIDGE_BIN, "worker", "--index", str(index)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.full_env(), **env},
            cwd=self.workdir,
        )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, path: str, token: str | None = None) -> Any:
        r = requests.get(
            f"{self.url}/api/v1{path}",
            headers={"Authorization": f"Bearer {token or self.token}"},
            timeout=30,
            verify=self.verify,
        )
        r.raise_for_status()
        return r.json()

    def wait_forwarded(self, instances: int, timeout: float = 120.0) -> dict[str, Any]:
        """The case once all ``instances`` are forwarded (not just a part that went quiet)."""
        return self.wait_case(
            lambda c: c["state"] == "forwarded" and c["instances"]["forwarded"] == instances,
            timeout,
        )

    def wait_case(self, predicate: Any, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            last = self.api("/cases")
            for c in last:
                if predicate(c):
                    return dict(c)
            time.sleep(0.25)
        raise TimeoutError(f"no case matched in {timeout}s; cases: {json.dumps(last)[:2000]}")


class WebhookReceiver:
    """A real HTTP server receiving case manifests and checking their signature."""

    def __init__(self, secret: bytes, fail_first: int = 0) -> None:
        self.secret = secret
        self.received: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.bad_signatures = 0
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if outer.fail_first > 0:
                    outer.fail_first -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                sig = self.headers.get("X-Bridge-Signature", "")
                want = "sha256=" + hmac.new(outer.secret, body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(sig, want):
                    outer.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                outer.raw.append(body)
                outer.received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cases"

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_SENT = re.compile(r"Sending file: (.+)$")
_OK = re.compile(r"Received Store Response \(Success\)")


def storescu(
    port: int,
    files: list[Path],
    aet: str = "SECONDOPINION",
    calling: str = "STORESCU",
    timeout: float = 600,
    check: bool = True,
    extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Send files with dcmtk's storescu (TCP_NODELAY=1), verbose so acknowledgements show."""
    cmd = ["storescu", "-v", *extra, "-aet", calling, "-aec", aet, "127.0.0.1", str(port)]
    env = dict(os.environ, TCP_NODELAY="1")
    return subprocess.run(
        [*cmd, *map(str, files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        timeout=timeout,
        check=check,
    )


def acknowledged(output: str) -> list[str]:
    """File paths storescu saw answered with Success, from its verbose output."""
    acked, current = [], None
    for line in output.splitlines():
        m = _SENT.search(line)
        if m:
            current = m.group(1).strip()
        elif _OK.search(line) and current:
            acked.append(current)
            current = None
    return acked
