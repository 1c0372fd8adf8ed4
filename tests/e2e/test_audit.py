"""The audit trail leaves as DICOM Audit Messages over syslog (a real TCP collector here),
exactly once across restarts, and exports from the API and the CLI."""

from __future__ import annotations

import re
import socketserver
import ssl
import subprocess
import threading
import time
from xml.etree import ElementTree as ET

import pytest
import requests

from bridge.sample import make_study
from conftest import bridge_env
from tests.helpers import add_user
from tests.support.orthanc import free_port
from tests.support.peers import BRIDGE_BIN, storescu

pytestmark = pytest.mark.e2e


class Collector:
    """A syslog collector over TCP with octet-counted framing (RFC 6587), or over TLS
    (RFC 5425) when given a server context."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.messages: list[str] = []
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                buf = b""
                while chunk := self.request.recv(65536):
                    buf += chunk
                    while (m := re.match(rb"(\d+) ", buf)) and len(buf) >= m.end() + int(m[1]):
                        n = int(m[1])
                        outer.messages.append(buf[m.end() : m.end() + n].decode())
                        buf = buf[m.end() + n :]

        self.port = free_port()
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < n:
            assert time.monotonic() < deadline, self.messages
            time.sleep(0.1)
        return self.messages

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _xml(message: str) -> ET.Element:
    assert re.match(
        r"<8[45]>1 \d{4}-\d\d-\d\dT[\d:.]+Z \S+ secondopinion - IHE\+RFC-3881 - ", message
    )
    return ET.fromstring(message[message.index("<AuditMessage>") :])


def _user_add(bridge, name: str) -> None:
    add_user(bridge, name, "a-long-enough-password")


@pytest.mark.slow(35)
def test_audit_trail_to_syslog_and_exports(tmp_path, reading, make_bridge):
    collector = Collector()
    try:
        bridge = make_bridge(
            bridge_env(
                reading,
                None,
                BRIDGE_AUDIT__SYSLOG_HOST="127.0.0.1",
                BRIDGE_AUDIT__SYSLOG_PORT=str(collector.port),
                BRIDGE_AUDIT__SYSLOG_PROTOCOL="tcp",
            )
        )
        study = make_study(tmp_path / "s", 3, rows=64, columns=64, accession="ACC-AUDIT")
        storescu(bridge.dimse_port, study.paths)
        case = bridge.wait_forwarded(3)
        _user_add(bridge, "auditor")
        messages = collector.wait(2)
        events = {
            x.find("EventIdentification/EventID").get("csd-code"): x for x in map(_xml, messages)
        }
        transferred = events["110104"]  # DICOM Instances Transferred
        assert (
            transferred.find("ParticipantObjectIdentification").get("ParticipantObjectID")
            == case["id"]
        )
        assert transferred.find("AuditSourceIdentification").get("AuditSourceID") == "SECONDOPINION"
        assert "110113" in events  # Security Alert: a user was added
        for value in study.identity:
            assert not any(value in m for m in messages), value

        # A restart ships what is new, and nothing twice.
        bridge.kill()
        _user_add(bridge, "second")  # while the bridge is down
        bridge.start()
        collector.wait(3)
        time.sleep(2)
        assert len(collector.messages) == 3

        # Exports: the API as DICOM Audit Messages, the CLI as syslog lines.
        r = requests.get(
            f"{bridge.url}/api/v1/audit?format=dicom",
            headers={"Authorization": f"Bearer {bridge.token}"},
            timeout=30,
        )
        root = ET.fromstring(r.content)
        assert root.tag == "AuditMessages" and len(root) == 3
        out = subprocess.run(
            [BRIDGE_BIN, "audit", "--format", "syslog", "--case", case["id"]],
            env=bridge.full_env(),
            cwd=bridge.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        (line,) = out.stdout.splitlines()
        assert _xml(line).find("EventIdentification/EventID").get("csd-code") == "110104"
    finally:
        collector.stop()


@pytest.mark.slow(40)
def test_audit_messages_over_tls_to_an_atna_collector(tmp_path, reading, make_bridge):
    """Issue #15, 12: IHE ATNA wants syslog over TLS (RFC 5425), both nodes authenticated.
    The collector requires a client certificate from its CA; the bridge verifies the collector
    against the CA it is given; a collector with a certificate from elsewhere gets nothing."""
    from tests.support.certs import issue, make_ca

    ca = make_ca(tmp_path / "pki")
    collector_pair = issue(tmp_path / "pki", "collector", ca)
    bridge_pair = issue(tmp_path / "pki", "bridge", ca, server=False)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(collector_pair.cert, collector_pair.key)
    ctx.load_verify_locations(cafile=ca[0].cert)
    ctx.verify_mode = ssl.CERT_REQUIRED
    collector = Collector(ctx)
    try:
        bridge = make_bridge(
            bridge_env(
                reading,
                None,
                BRIDGE_AUDIT__SYSLOG_HOST="127.0.0.1",
                BRIDGE_AUDIT__SYSLOG_PORT=str(collector.port),
                BRIDGE_AUDIT__SYSLOG_PROTOCOL="tls",
                BRIDGE_AUDIT__SYSLOG_CA=str(ca[0].cert),
                BRIDGE_AUDIT__SYSLOG_CLIENT_CERT=str(bridge_pair.cert),
                BRIDGE_AUDIT__SYSLOG_CLIENT_KEY=str(bridge_pair.key),
            )
        )
        _feed_started(bridge)
        _user_add(bridge, "auditor")
        (message,) = collector.wait(1)
        assert _xml(message).find("EventIdentification/EventID").get("csd-code") == "110113"
    finally:
        collector.stop()

    # A collector whose certificate the bridge's CA did not sign: nothing is sent to it.
    other_ca = make_ca(tmp_path / "other", "other-ca")
    impostor_pair = issue(tmp_path / "other", "impostor", other_ca)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(impostor_pair.cert, impostor_pair.key)
    impostor = Collector(ctx)
    try:
        bridge = make_bridge(
            bridge_env(
                reading,
                None,
                BRIDGE_AUDIT__SYSLOG_HOST="127.0.0.1",
                BRIDGE_AUDIT__SYSLOG_PORT=str(impostor.port),
                BRIDGE_AUDIT__SYSLOG_PROTOCOL="tls",
                BRIDGE_AUDIT__SYSLOG_CA=str(ca[0].cert),
            ),
            name="second",
        )
        _feed_started(bridge)
        _user_add(bridge, "someone")
        time.sleep(3)
        assert impostor.messages == []
        assert "audit.syslog_failed" in bridge.log()
    finally:
        impostor.stop()


def _feed_started(bridge) -> None:
    """A new syslog target starts after the newest event: wait until the worker has begun."""
    deadline = time.monotonic() + 60
    while "worker.started" not in bridge.log():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1.0)
