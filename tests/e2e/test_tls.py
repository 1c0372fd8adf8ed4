"""TLS everywhere it is configured: HTTPS, the DICOM TLS listener with client certificates
(dcmtk's storescu as the modality), and DICOM TLS to a PACS (Orthanc with DICOM TLS).
Certificates are made in the test."""

from __future__ import annotations

import subprocess
import time

import pytest
import requests

from bridge.sample import make_study
from conftest import bridge_env
from tests.support.certs import issue, make_ca
from tests.support.orthanc import Orthanc
from tests.support.peers import BRIDGE_BIN, acknowledged, storescu

pytestmark = pytest.mark.e2e


def test_https_and_dicom_tls_with_client_certificates(tmp_path, reading, make_bridge):
    ca = make_ca(tmp_path / "pki")
    server = issue(tmp_path / "pki", "bridge", ca)
    modality = issue(tmp_path / "pki", "modality", ca, server=False)
    stranger_ca = make_ca(tmp_path / "other", "stranger-ca")
    stranger = issue(tmp_path / "other", "stranger", stranger_ca, server=False)
    ca_file = str(ca[0].cert)
    bridge = make_bridge(
        bridge_env(
            reading,
            None,
            BRIDGE_HTTP__TLS_CERT=str(server.cert),
            BRIDGE_HTTP__TLS_KEY=str(server.key),
            BRIDGE_DIMSE__TLS_CERT=str(server.cert),
            BRIDGE_DIMSE__TLS_KEY=str(server.key),
            BRIDGE_DIMSE__TLS_CA=ca_file,
        ),
        ca=ca_file,
    )
    # HTTPS only, verified against the test CA; not against the system's.
    assert requests.get(f"{bridge.url}/healthz", verify=ca_file, timeout=10).ok
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{bridge.url}/healthz", timeout=10)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{bridge.http_port}/healthz", timeout=10)

    study = make_study(tmp_path / "s", 3, rows=64, columns=64, accession="ACC-TLS")
    tls = ("+tls", str(modality.key), str(modality.cert), "+cf", ca_file)
    out = storescu(bridge.dimse_port, study.paths, extra=tls, check=False)
    assert len(acknowledged(out.stdout)) == 3, out.stdout
    assert bridge.wait_forwarded(3)["instances"]["forwarded"] == 3
    # Plain TCP, and TLS with a certificate the bridge does not trust: nothing accepted.
    plain = storescu(bridge.dimse_port, study.paths[:1], check=False, timeout=60)
    assert acknowledged(plain.stdout) == []
    other = ("+tls", str(stranger.key), str(stranger.cert), "+cf", ca_file)
    refused = storescu(bridge.dimse_port, study.paths[:1], extra=other, check=False, timeout=60)
    assert acknowledged(refused.stdout) == []


def test_dicom_tls_to_the_pacs(tmp_path, reading, make_bridge):
    ca = make_ca(tmp_path / "pki")
    pacs_pair = issue(tmp_path / "pki", "pacs", ca)
    bridge_pair = issue(tmp_path / "pki", "bridge-client", ca, server=False)
    pacs = Orthanc(
        "TLSPACS",
        tmp_path / "tlspacs",
        aet="TLSPACS",
        extra={
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(pacs_pair.cert),
            "DicomTlsPrivateKey": str(pacs_pair.key),
            "DicomTlsTrustedCertificates": str(ca[0].cert),
            "DicomTlsRemoteCertificateRequired": True,
            "DicomAlwaysAllowFind": True,
        },
    ).start()
    try:
        study = make_study(tmp_path / "s", 2, rows=64, columns=64, accession="ACC-TLSPACS")
        for p in study.paths:
            requests.post(
                f"{pacs.url}/instances", data=p.read_bytes(), timeout=30
            ).raise_for_status()
        dimse = {
            "BRIDGE_PACS__AE_TITLE": "TLSPACS",
            "BRIDGE_PACS__HOST": "127.0.0.1",
            "BRIDGE_PACS__PORT": str(pacs.dicom_port),
            "BRIDGE_PACS__VERIFY_TLS": str(ca[0].cert),
            "BRIDGE_PACS__CLIENT_CERT": str(bridge_pair.cert),
            "BRIDGE_PACS__CLIENT_KEY": str(bridge_pair.key),
        }
        bridge = make_bridge(bridge_env(reading, None, BRIDGE_PACS__DIMSE_TLS="true", **dimse))

        def find(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [BRIDGE_BIN, "find", "--accession", "ACC-TLSPACS"],
                env={**bridge.full_env(), **env_extra},
                cwd=bridge.workdir,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )

        out = find({})
        assert out.returncode == 0 and study.study_uid in out.stdout, out.stderr
        # Without TLS the PACS does not answer; with a CA that did not sign it, no trust.
        assert find({"BRIDGE_PACS__DIMSE_TLS": "false"}).returncode != 0
        other = make_ca(tmp_path / "other", "other-ca")
        out = find({"BRIDGE_PACS__VERIFY_TLS": str(other[0].cert)})
        assert out.returncode != 0
    finally:
        pacs.stop()


class _HttpsRelay:
    """HTTPS in front of a plain HTTP server (the reading Orthanc), with a certificate from
    the test's CA; it keeps every request body it relays (the STOW-RS bodies, to scan)."""

    def __init__(self, upstream: str, cert: str, key: str) -> None:
        import ssl
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from tests.support.orthanc import free_port

        self.bodies: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self, method: str) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                if body:
                    outer.bodies.append(body)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                r = requests.request(
                    method, upstream + self.path, data=body, headers=headers, timeout=60
                )
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("Content-Type", "text/plain"))
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            def do_GET(self) -> None:  # noqa: N802
                self._relay("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._relay("POST")

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_outbound_https_is_verified_and_stow_bodies_carry_no_identity(
    tmp_path, reading, make_bridge
):
    ca = make_ca(tmp_path / "pki")
    site = issue(tmp_path / "pki", "archive", ca)
    relay = _HttpsRelay(reading.url, str(site.cert), str(site.key))
    try:
        url = f"https://127.0.0.1:{relay.port}/dicom-web"
        study = make_study(tmp_path / "s", 3, rows=64, columns=64, accession="ACC-HTTPS")
        # Without the CA: the archive's certificate is not trusted; nothing is sent.
        untrusting = make_bridge(bridge_env(url, None), name="untrusting")
        doctor = subprocess.run(
            [BRIDGE_BIN, "doctor"],
            env=untrusting.full_env(),
            cwd=untrusting.workdir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert doctor.returncode == 1 and "TLS certificate not valid" in doctor.stdout
        storescu(untrusting.dimse_port, study.paths)
        untrusting.wait_case(lambda c: c["instances"]["deidentified"] == 3, timeout=60)
        time.sleep(2)
        assert untrusting.api("/cases")[0]["instances"]["forwarded"] == 0
        assert '"forward.retry"' in untrusting.log()
        untrusting.kill()
        # With the CA bundle: delivered over HTTPS.
        trusting = make_bridge(
            bridge_env(url, None, BRIDGE_READING__VERIFY_TLS=str(ca[0].cert)), name="trusting"
        )
        storescu(trusting.dimse_port, study.paths)
        assert trusting.wait_forwarded(3)["instances"]["forwarded"] == 3
        stow = b"".join(relay.bodies)
        assert stow.count(b"DICM") >= 3
        for value in study.identity:
            assert value.encode() not in stow, value
    finally:
        relay.stop()
