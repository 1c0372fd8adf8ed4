"""A minute of outage on both sides: the reading archive and the hospital PACS (for the return)
refuse connections, then answer 503, then answer too slowly; afterwards everything is delivered
without an operator."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from bridge.sample import make_study
from conftest import bridge_env
from tests.e2e.conftest import count_study
from tests.support.orthanc import free_port
from tests.support.peers import acknowledged, storescu

pytestmark = pytest.mark.e2e


class PhaseProxy:
    """A real HTTP proxy to ``upstream`` whose behaviour follows a phase: "down" (no listener:
    connection refused), "503", "slow" (answers after ``delay`` seconds), "up"."""

    def __init__(self, upstream: str, delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self.phase = "down"
        self.port = free_port()
        self.server: ThreadingHTTPServer | None = None
        self.seen = {"503": 0, "slow": 0, "up": 0}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                phase = outer.phase
                outer.seen[phase] = outer.seen.get(phase, 0) + 1
                if phase == "503":
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if phase == "slow":
                    time.sleep(outer.delay)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                r = requests.request(
                    method, outer.upstream + self.path, data=body, headers=headers, timeout=60
                )
                self.send_response(r.status_code)
                for k in ("Content-Type",):
                    if k in r.headers:
                        self.send_header(k, r.headers[k])
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            def do_GET(self) -> None:  # noqa: N802
                self._relay("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._relay("POST")

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def set(self, phase: str) -> None:
        if phase == "down":
            self.stop()
        elif self.server is None:
            self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
            self.server.daemon_threads = True
            threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.phase = phase

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.mark.slow(145)
def test_a_minute_of_outage_on_both_sides(tmp_path, hospital, reading, make_bridge):
    archive = PhaseProxy(reading.url, delay=4)
    pacs = PhaseProxy(hospital.url, delay=4)
    try:
        bridge = make_bridge(
            bridge_env(
                f"{archive.url}/dicom-web",
                None,
                BRIDGE_PACS__DICOMWEB_URL=f"{pacs.url}/dicom-web",
                BRIDGE_READING__TIMEOUT="2",
                BRIDGE_PACS__TIMEOUT="2",
                BRIDGE_READING__RETRY_INITIAL="1",
                BRIDGE_READING__RETRY_MAX="4",
                BRIDGE_READING__POLL_SECONDS="0",
            )
        )
        study = make_study(tmp_path / "s", 10, rows=64, columns=64, accession="ACC-OUTAGE")
        for p in study.paths:  # the original study, for the report's return
            requests.post(f"{hospital.url}/instances", data=p.read_bytes(), timeout=30)
        assert len(acknowledged(storescu(bridge.dimse_port, study.paths).stdout)) == 10

        start = time.monotonic()
        for phase, until in (("down", 20), ("503", 40), ("slow", 60)):
            archive.set(phase)
            while time.monotonic() - start < until:
                time.sleep(0.5)
        case = bridge.api("/cases")[0]
        assert case["instances"]["forwarded"] < 10  # nothing got through the outage...
        archive.set("up")
        case = bridge.wait_case(lambda c: c["state"] == "forwarded", timeout=120)
        assert count_study(reading, case["pseudonymized_study_instance_uid"]) == 10
        assert archive.seen["503"] > 0 and archive.seen["slow"] > 0

        # The return: the PACS goes through the same phases.
        findings = {
            "reader": {"name": "Lee^Ana", "organization": "Reading Group"},
            "status": "final",
            "findings": "Stable.",
            "signed_at": "2026-11-28T10:15:00Z",
        }
        r = requests.post(
            f"{bridge.url}/api/v1/cases/{case['id']}/findings",
            json=findings,
            headers={"Authorization": f"Bearer {bridge.token}"},
            timeout=30,
        )
        assert r.status_code in (200, 201, 202), r.text
        for phase in ("down", "503", "slow"):  # a minute, as for the archive
            pacs.set(phase)
            time.sleep(20)
        assert bridge.api(f"/cases/{case['id']}")["state"] == "findings_received"
        pacs.set("up")
        bridge.wait_case(lambda c: c["id"] == case["id"] and c["state"] == "returned", timeout=120)
        assert count_study(hospital, study.study_uid) == 11
        log = bridge.log()
        assert '"forward.retry"' in log and '"report.retry"' in log
    finally:
        archive.stop()
        pacs.stop()
