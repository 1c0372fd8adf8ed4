"""STOW-RS body and response handling, manifest signing, backoff (no servers)."""

from __future__ import annotations

import hashlib
import hmac
import json

from bridge.peers.http import backoff
from bridge.peers.queue import sign
from bridge.peers.stow import MultipartBody, parse_response
from bridge.pipeline.manifest import encode


def test_multipart_body_streams_exact_bytes(tmp_path):
    files = []
    for i, size in enumerate([0, 1, 70000, 3 * 1024 * 1024 + 7]):
        p = tmp_path / f"{i}.dcm"
        p.write_bytes(bytes([i]) * size)
        files.append(p)
    body = MultipartBody(files, "BOUNDARY")
    chunks = []
    while chunk := body.read(8191):
        chunks.append(chunk)
    raw = b"".join(chunks)
    assert len(raw) == len(body)
    parts = raw.split(b"--BOUNDARY")
    assert parts[-1] == b"--\r\n"
    payloads = [p.split(b"\r\n\r\n", 1)[1][:-2] for p in parts[1:-1]]
    assert [len(p) for p in payloads] == [0, 1, 70000, 3 * 1024 * 1024 + 7]
    assert all(b"Content-Type: application/dicom" in p for p in parts[1:-1])


def test_parse_response_per_instance():
    body = {
        "00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.1"]}}]},
        "00081198": {
            "vr": "SQ",
            "Value": [
                {
                    "00081155": {"vr": "UI", "Value": ["1.2"]},
                    "00081197": {"vr": "US", "Value": [0xC000]},
                },
                {
                    "00081155": {"vr": "UI", "Value": ["1.3"]},
                    "00081197": {"vr": "US", "Value": [0xA700]},
                },
                {
                    "00081155": {"vr": "UI", "Value": ["1.4"]},
                    "00081197": {"vr": "US", "Value": [0x0111]},
                },
            ],
        },
    }
    out = parse_response(body, ["1.1", "1.2", "1.3", "1.4", "1.5"], 202)
    assert out.stored == {"1.1", "1.4"}
    assert out.failed["1.2"] == ("archive FailureReason 0xC000", False)
    assert out.failed["1.3"][1] is True
    assert "1.5" not in out.stored  # 202 without a word about it: not confirmed
    assert parse_response({}, ["9.9"], 200).stored == {"9.9"}


def test_manifest_signature_is_hmac_of_body():
    body = encode({"case_id": "abc", "b": 1})
    assert json.loads(body) == {"b": 1, "case_id": "abc"}
    want = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert sign(body, b"k") == f"sha256={want}"


def test_backoff_bounded_and_growing():
    for n in range(1, 50):
        d = backoff(n, 2.0, 300.0)
        assert 1.0 <= d <= 300.0
    assert max(backoff(20, 2.0, 300.0) for _ in range(200)) > 100
