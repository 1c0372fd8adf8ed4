"""Forwarding outcomes against real HTTP peers: per-instance rejections, auth, manifest retries."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread

from bridge.sample import make_study
from conftest import QUEUE_SECRET, bridge_env
from tests.support.orthanc import Orthanc, free_port
from tests.support.peers import WebhookReceiver, acknowledged, storescu

pytestmark = pytest.mark.e2e


class StubArchive:
    """A STOW-RS endpoint answering per instance: rejects some for good, some once."""

    def __init__(self, reject: set[int], busy_once: set[int]) -> None:
        self.reject, self.busy_once = reject, busy_once
        self.stored: dict[str, int] = {}
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                outer.requests += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                msg = BytesParser(policy=HTTP).parsebytes(
                    b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body
                )
                ok, failed = [], []
                for part in msg.iter_parts():
                    ds = dcmread(BytesIO(part.get_payload(decode=True)))
                    uid, number = str(ds.SOPInstanceUID), int(ds.InstanceNumber)
                    item = {
                        "00081150": {"vr": "UI", "Value": [str(ds.SOPClassUID)]},
                        "00081155": {"vr": "UI", "Value": [uid]},
                    }
                    if number in outer.reject:
                        item["00081197"] = {"vr": "US", "Value": [0xC000]}
                        failed.append(item)
                    elif number in outer.busy_once:
                        outer.busy_once.discard(number)
                        item["00081197"] = {"vr": "US", "Value": [0xA700]}
                        failed.append(item)
                    else:
                        outer.stored[uid] = number
                        ok.append(item)
                out = {"00081199": {"vr": "SQ", "Value": ok}}
                if failed:
                    out["00081198"] = {"vr": "SQ", "Value": failed}
                data = json.dumps(out).encode()
                self.send_response(202 if failed else 200)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicom-web"


def test_rejected_instance_is_quarantined_busy_one_retried(tmp_path: Path, make_bridge):
    stub = StubArchive(reject={3}, busy_once={5})
    try:
        bridge = make_bridge(bridge_env(stub.url, None))
        study = make_study(tmp_path / "s", 6, rows=32, columns=32)
        storescu(bridge.dimse_port, study.paths)
        case = bridge.wait_case(lambda c: c["state"] == "failed", timeout=60)
        assert case["instances"]["forwarded"] == 5
        assert case["instances"]["quarantined"] == 1
        assert "1 of 6 instance(s) quarantined" in case["error"]
        assert sorted(stub.stored.values()) == [1, 2, 4, 5, 6]
        log = bridge.log()
        assert "0xC000" in log and '"forward.rejected"' in log
    finally:
        stub.server.shutdown()


def test_basic_auth_to_the_archive_and_manifest_retries(tmp_path, tmp_path_factory, make_bridge):
    archive = Orthanc(
        "AUTH",
        tmp_path_factory.mktemp("auth"),
        aet="AUTH",
        extra={"AuthenticationEnabled": True, "RegisteredUsers": {"bridge": "s3cret-pass"}},
    ).start()
    hook = WebhookReceiver(QUEUE_SECRET, fail_first=2).start()
    try:
        # Wrong password first: nothing is lost, the bridge keeps retrying.
        env = bridge_env(
            archive, hook, BRIDGE_READING__USERNAME="bridge", BRIDGE_READING__PASSWORD="wrong"
        )
        bridge = make_bridge(env, name="wrong")
        study = make_study(tmp_path / "a", 4, rows=32, columns=32)
        assert len(acknowledged(storescu(bridge.dimse_port, study.paths).stdout)) == 4
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if '"status": 401' in bridge.log() or "status=401" in bridge.log():
                break
            time.sleep(0.3)
        assert '"status": 401' in bridge.log() or "status=401" in bridge.log()
        case = bridge.api("/cases")[0]
        assert case["instances"]["forwarded"] == 0 and case["instances"]["quarantined"] == 0
        assert "wrong" not in bridge.log()
        bridge.kill()

        env["BRIDGE_READING__PASSWORD"] = "s3cret-pass"
        bridge = make_bridge(
            env, name="wrong", dimse_port=bridge.dimse_port, http_port=bridge.http_port
        )
        case = bridge.wait_case(lambda c: c["state"] == "forwarded", timeout=60)
        assert count_study_auth(archive, case["pseudonymized_study_instance_uid"]) == 4
        deadline = time.monotonic() + 30
        while not hook.received and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [m["case_id"] for m in hook.received] == [case["id"]]
        assert "s3cret-pass" not in bridge.log()
    finally:
        hook.stop()
        archive.stop()


def count_study_auth(o: Orthanc, study_uid: str) -> int:
    import requests

    r = requests.post(
        f"{o.url}/tools/find",
        auth=("bridge", "s3cret-pass"),
        timeout=30,
        json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}},
    )
    r.raise_for_status()
    return len(r.json())


def test_the_pipeline_waits_while_the_listener_receives(tmp_path: Path, make_bridge):
    """Listener first, "wait": while a PACS sends, nothing is de-identified or forwarded; once
    the listener has been quiet for worker.intake_quiet_seconds, the study goes on."""
    stub = StubArchive(reject=set(), busy_once=set())
    try:
        quiet = 4.0
        env = bridge_env(
            stub.url,
            None,
            BRIDGE_WORKER__LISTENER_FIRST="wait",
            BRIDGE_WORKER__INTAKE_QUIET_SECONDS=str(quiet),
        )
        bridge = make_bridge(env)
        study = make_study(tmp_path / "s", 6, rows=32, columns=32)
        storescu(bridge.dimse_port, study.paths[:3])
        storescu(bridge.dimse_port, study.paths[3:])  # a second association
        sent = time.monotonic()
        seen = []
        while time.monotonic() - sent < quiet - 1.5:
            cases = bridge.api("/cases")
            seen.append(sum(c["instances"].get("received", 0) for c in cases))
            assert stub.requests == 0
            assert not any(c["instances"].get("deidentified") for c in cases), cases
            time.sleep(0.3)
        assert seen[-1] == 6  # all recorded, all waiting
        case = bridge.wait_case(lambda c: c["instances"].get("forwarded") == 6, timeout=60)
        assert sorted(stub.stored.values()) == [1, 2, 3, 4, 5, 6], case
        assert time.monotonic() - sent >= quiet - 0.5
    finally:
        stub.server.shutdown()


def _idle_threads(pid: int) -> int:
    """Threads of the process running at Linux's lowest CPU priority (SCHED_IDLE)."""
    count = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            count += os.sched_getscheduler(int(task.name)) == os.SCHED_IDLE
    return count


@pytest.mark.parametrize(("mode", "lowered"), [("yield", True), ("wait", False), ("off", False)])
def test_worker_threads_yield_the_cpu_to_the_listener(
    tmp_path: Path, make_bridge, mode: str, lowered: bool
):
    """Listener first, "yield": the worker process de-identifies and forwards at the lowest CPU
    priority, the listener's process keeps the normal one; studies still go through. "wait"
    (the default) and "off" leave every thread as it was."""
    stub = StubArchive(reject=set(), busy_once=set())
    try:
        bridge = make_bridge(bridge_env(stub.url, None, BRIDGE_WORKER__LISTENER_FIRST=mode))
        study = make_study(tmp_path / "s", 4, rows=32, columns=32)
        storescu(bridge.dimse_port, study.paths)
        bridge.wait_case(lambda c: c["instances"].get("forwarded") == 4, timeout=60)
        assert bridge.process is not None
        serve = bridge.process.pid
        workers = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                if stat.read_text().rsplit(")", 1)[1].split()[1] == str(serve):
                    workers.append(int(stat.parent.name))
        assert len(workers) == 1
        # its two de-identification threads and two forwarding streams (the defaults), and the
        # threads they started (lease keepers, the text scan's frame threads) inherit it
        assert _idle_threads(workers[0]) >= 4 if lowered else _idle_threads(workers[0]) == 0
        assert _idle_threads(serve) == 0
    finally:
        stub.server.shutdown()
