"""HTTP abuse: oversized and chunked bodies, bad JSON, malformed STOW-RS multipart, slow clients
holding connections: each answered with a 4xx and a reason, and the server keeps serving."""

from __future__ import annotations

import socket
import time

import pytest
import requests

from conftest import DEID_SECRET, bridge_env

pytestmark = pytest.mark.e2e


def test_http_abuse_gets_4xx_and_the_server_keeps_serving(reading, make_bridge):
    bridge = make_bridge(bridge_env(reading, None, BRIDGE_HTTP__MAX_BODY_BYTES="100000"))
    auth = {"Authorization": f"Bearer {bridge.token}"}
    api = f"{bridge.url}/api/v1"

    r = requests.post(
        f"{api}/findings",
        data=b"{not json",
        headers={**auth, "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 422
    r = requests.post(f"{api}/findings", json={"reader": "x" * 200_000}, headers=auth, timeout=30)
    assert r.status_code == 413 and "larger than 100000" in r.json()["detail"]

    def chunks():
        yield b'{"reader": '
        yield b'"x"}'

    r = requests.post(
        f"{api}/findings",
        data=chunks(),
        headers={**auth, "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 411
    r = requests.post(f"{api}/findings", json={}, timeout=30)
    assert r.status_code == 401
    r = requests.post(
        f"{api}/findings", json={}, headers={"Authorization": "Bearer wrong"}, timeout=30
    )
    assert r.status_code == 401

    stow = f"{bridge.url}/dicom-web/studies"
    r = requests.post(
        stow,
        data=b"--x\r\nnot a part",
        headers={**auth, "Content-Type": 'multipart/related; type="application/dicom"; boundary=x'},
        timeout=30,
    )
    assert r.status_code in (400, 409) and r.text
    r = requests.post(
        stow, data=b"{}", headers={**auth, "Content-Type": "application/json"}, timeout=30
    )
    assert r.status_code == 415

    # Slow clients: 60 connections that send half a request and stall. A normal request is
    # still answered at once.
    slow = []
    for _ in range(60):
        s = socket.create_connection(("127.0.0.1", bridge.http_port), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        slow.append(s)
    try:
        t = time.monotonic()
        assert requests.get(f"{bridge.url}/healthz", timeout=10).ok
        assert time.monotonic() - t < 2
    finally:
        for s in slow:
            s.close()
    assert bridge.process is not None and bridge.process.poll() is None
    # Secrets never reach the log, an error or `bridge settings`.
    import subprocess

    from tests.support.peers import BRIDGE_BIN

    shown = subprocess.run(
        [BRIDGE_BIN, "settings"],
        env=bridge.full_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for secret in (bridge.token, DEID_SECRET):
        assert secret not in bridge.log() and secret not in shown
        assert secret not in r.text


def test_api_tokens_have_roles(reading, make_bridge):
    import json

    tokens = {
        "viewer": "viewer-token-0123456789",
        "submitter": "submitter-token-0123456789",
        "reader": "reader-token-0123456789",
    }
    bridge = make_bridge(
        bridge_env(
            reading,
            None,
            BRIDGE_API_TOKENS=json.dumps(
                [{"name": role, "token": t, "role": role} for role, t in tokens.items()]
            ),
        )
    )
    api = f"{bridge.url}/api/v1"

    def call(role: str, method: str, path: str, **kw: object) -> int:
        token = bridge.token if role == "admin" else tokens[role]
        r = requests.request(
            method, api + path, headers={"Authorization": f"Bearer {token}"}, timeout=30, **kw
        )
        return r.status_code

    expected = [
        ("viewer", "GET", "/cases", 200),
        ("viewer", "GET", "/quarantine", 200),
        ("viewer", "POST", "/cases", 403),
        ("viewer", "POST", "/quarantine/instances/1/retry", 403),
        ("viewer", "GET", "/audit", 403),
        ("viewer", "POST", "/findings", 403),
        ("submitter", "GET", "/studies?patient_id=X", 503),  # allowed; no PACS configured
        ("submitter", "POST", "/findings", 403),
        ("reader", "GET", "/cases", 403),
        ("reader", "POST", "/cases/none/findings", 422),  # allowed; the body is checked next
        ("admin", "GET", "/audit", 200),
    ]
    got = [(role, m, p, call(role, m, p, json={})) for role, m, p, _ in expected]
    assert got == expected
    r = requests.post(
        f"{bridge.url}/dicom-web/studies",
        data=b"{}",
        headers={"Authorization": f"Bearer {tokens['reader']}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 415  # the reader may STOW (and is told what to send)


def test_docs_are_off_by_default_and_metrics_can_need_a_token(reading, make_bridge):
    """Issue #15, 12: /docs and /openapi.json describe every route to anyone: off unless
    asked for; /metrics open (the default: no identifying values), behind a token, or off."""
    bridge = make_bridge(bridge_env(reading, None))
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert requests.get(bridge.url + path, timeout=10).status_code == 404, path
    assert requests.get(bridge.url + "/metrics", timeout=10).status_code == 200
    bridge.stop()

    guarded = make_bridge(
        bridge_env(reading, None, BRIDGE_HTTP__METRICS="token", BRIDGE_HTTP__API_DOCS="token"),
        name="guarded",
    )
    auth = {"Authorization": f"Bearer {guarded.token}"}
    for path in ("/metrics", "/docs", "/openapi.json"):
        assert requests.get(guarded.url + path, timeout=10).status_code == 401, path
        assert requests.get(guarded.url + path, headers=auth, timeout=10).status_code == 200, path
    assert (
        "/api/v1/cases" in requests.get(guarded.url + "/openapi.json", headers=auth).json()["paths"]
    )
    guarded.stop()

    off = make_bridge(bridge_env(reading, None, BRIDGE_HTTP__METRICS="off"), name="off")
    assert requests.get(off.url + "/metrics", timeout=10).status_code == 404
    assert requests.get(off.url + "/livez", timeout=10).status_code == 200


def test_stow_into_the_bridge_streams_to_disk(tmp_path, reading, make_bridge):
    """Issue #15, 12: a STOW-RS body went into memory whole (up to 256 MiB) and was parsed on
    the event loop. Now each part streams to a file: 150 MiB in, memory barely moves, the
    server keeps answering, and the part is judged like any other (not DICOM: refused)."""
    import threading

    bridge = make_bridge(bridge_env(reading, None))
    assert bridge.process is not None
    pid = bridge.process.pid

    def rss() -> float:
        for line in open(f"/proc/{pid}/status"):  # noqa: SIM115, PTH123
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    before = rss()
    peak = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.05)

    boundary = "stowbigpart0123"
    junk = b"\x00" * (1 << 20)

    upload = tmp_path / "stow.bin"
    with upload.open("wb") as fh:
        fh.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        for _ in range(150):
            fh.write(junk)
        fh.write(f"\r\n--{boundary}--\r\n".encode())
    threading.Thread(target=watch, daemon=True).start()
    try:
        with upload.open("rb") as fh:
            r = requests.post(
                f"{bridge.url}/dicom-web/studies",
                data=fh,
                headers={
                    "Authorization": f"Bearer {bridge.token}",
                    "Content-Type": (
                        f'multipart/related; type="application/dicom"; boundary={boundary}'
                    ),
                },
                timeout=120,
            )
    finally:
        done.set()
    assert r.status_code == 409, r.text
    failed = r.json()["00081198"]["Value"]
    assert failed[0]["00000902"]["Value"] == ["not a DICOM object"]
    assert peak[0] - before < 64, f"RSS grew by {peak[0] - before:.0f} MiB"
    assert requests.get(f"{bridge.url}/livez", timeout=5).status_code == 200
    spool = bridge.workdir / "data" / "spool"
    assert [p for p in (spool / "tmp").iterdir()] == []
