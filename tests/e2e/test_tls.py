"""TLS everywhere it is configured: HTTPS, the DICOM TLS listener with client certificates
(dcmtk's storescu as the modality), and DICOM TLS to a PACS (Orthanc with DICOM TLS).
Certificates are made in the test."""

from __future__ import annotations

import subprocess

import pytest
import requests

from bridge.testing.certs import issue, make_ca
from bridge.testing.orthanc import Orthanc
from bridge.testing.peers import BRIDGE_BIN, acknowledged, storescu
from bridge.testing.sample import make_study
from conftest import bridge_env

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
