"""Scale-out on PostgreSQL: one node receives, worker processes of other nodes do the work.

Node A runs `bridge serve --no-workers` (listener and HTTP only); nodes B and C run
`bridge worker`, each with its own node id and data directory, sharing A's spool path and the
PostgreSQL state store. Claims are `FOR UPDATE SKIP LOCKED` with leases; B is killed with
SIGKILL while it holds claims, and C finishes B's share once B's leases expire.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import Engine, create_engine, text

from bridge.deid.pseudonyms import Pseudonymizer
from bridge.sample import make_study
from conftest import DEID_SECRET, bridge_env
from tests.support.orthanc import Orthanc
from tests.support.peers import BridgeProcess, WebhookReceiver, acknowledged, storescu

pytestmark = pytest.mark.e2e

N = 36


def _instances_in(reading: Orthanc, pseudo_study: str) -> list[str]:
    found = requests.post(
        f"{reading.url}/tools/find",
        json={"Level": "Instance", "Query": {"StudyInstanceUID": pseudo_study}, "Expand": True},
        timeout=60,
    ).json()
    return [i["MainDicomTags"]["SOPInstanceUID"] for i in found]


def _count(engine: Engine, case_id: str, condition: str, table: str = "instances") -> int:
    sql = f"SELECT count(*) FROM {table} WHERE case_id = :c AND {condition}"  # noqa: S608
    with engine.connect() as conn:
        return int(conn.execute(text(sql), {"c": case_id}).scalar_one())


@pytest.mark.slow(40)
def test_a_killed_worker_node_loses_nothing_and_nothing_is_delivered_twice(
    tmp_path: Path, reading: Orthanc, webhook: WebhookReceiver, postgres_url: str
) -> None:
    shared_spool = tmp_path / "shared-spool"
    common = bridge_env(
        reading,
        webhook,
        BRIDGE_DATABASE_URL=postgres_url,
        BRIDGE_SPOOL__PATH=str(shared_spool),
        BRIDGE_WORKER__LEASE_SECONDS="4",
        BRIDGE_WORKER__SWEEP_SECONDS="1",
        BRIDGE_WORKER__DEID_THREADS="1",
        BRIDGE_LOG_LEVEL="info",
    )
    node_a = BridgeProcess(
        tmp_path / "node-a", {**common, "BRIDGE_NODE_ID": "node-a"}, args=("serve", "--no-workers")
    ).start()
    workers = []
    try:
        study = make_study(tmp_path / "study", N, seed=808)
        out = storescu(node_a.dimse_port, study.paths)
        assert len(acknowledged(out.stdout)) == N
        # Nothing moves until a worker node starts: node A only receives.
        time.sleep(1.0)
        (case,) = [c for c in node_a.api("/cases") if c["instances"]["received"] == N]
        assert case["instances"].get("forwarded", 0) == 0

        # Nodes B and C: separate data directories, the same spool path and state store.
        node_b = BridgeProcess(tmp_path / "node-b", {**common, "BRIDGE_NODE_ID": "node-b"})
        node_c = BridgeProcess(tmp_path / "node-c", {**common, "BRIDGE_NODE_ID": "node-c"})
        for node in (node_b, node_c):
            node.workdir.mkdir(parents=True)
        worker_b = node_b.worker(0)
        worker_c = node_c.worker(0)
        workers = [worker_b, worker_c]

        engine = create_engine(postgres_url)
        claimed_by_b = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill B while it holds claims, mid-run
            claimed_by_b = _count(engine, case["id"], "lease_owner LIKE 'node-b-w0:%'")
            done = _count(engine, case["id"], "state = 'forwarded'")
            if claimed_by_b and done >= 4:
                break
            time.sleep(0.05)
        assert claimed_by_b, "worker B never claimed anything"
        assert done < N, "the run was over before the kill"
        worker_b.send_signal(signal.SIGKILL)
        worker_b.wait()

        final = node_a.wait_forwarded(N, timeout=240)
        assert final["id"] == case["id"]

        # Every instance once in the archive: no duplicate, none missing.
        pseudo_study = Pseudonymizer(DEID_SECRET.encode()).uid(study.study_uid)
        in_archive = _instances_in(reading, pseudo_study)
        assert len(in_archive) == N
        assert len(set(in_archive)) == N
        with engine.connect() as conn:
            states = conn.execute(
                text("SELECT state, count(*) FROM instances WHERE case_id = :c GROUP BY state"),
                {"c": case["id"]},
            ).all()
        forwarded_events = _count(engine, case["id"], "action = 'case.forwarded'", "audit_events")
        leftover = _count(engine, case["id"], "lease_owner IS NOT NULL")
        engine.dispose()
        assert dict(states) == {"forwarded": N}
        assert forwarded_events == 1
        assert leftover == 0
        # One manifest for the case, signed (the receiver checks the signature).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            m["case_id"] == case["id"] for m in webhook.received
        ):
            time.sleep(0.2)
        time.sleep(1.0)
        assert [m["case_id"] for m in webhook.received].count(case["id"]) == 1
        # B's leftovers on the shared spool (copies it wrote but never recorded, a half-written
        # one) are swept by the survivor once two leases old; nothing else is left either.
        deadline = time.monotonic() + 60
        left = ["?"]
        while time.monotonic() < deadline and left:
            left = [
                f.name
                for area in ("deid", "tmp", "received")
                for f in (shared_spool / area).iterdir()
            ]
            time.sleep(0.5)
        assert left == []
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
                w.wait(30)
        node_a.stop()


class _SlowArchive:
    """A reading archive that takes ``delay`` seconds per STOW-RS (a real HTTP server in front
    of the reading Orthanc); counts how often each SOP Instance UID was stored."""

    def __init__(self, target: str, delay: float) -> None:
        import http.server
        import threading
        from collections import Counter

        self.stored: Counter[str] = Counter()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(delay)
                resp = requests.post(
                    target + self.path.removeprefix("/dicom-web"),
                    data=body,
                    headers={"Content-Type": self.headers["Content-Type"]},
                    timeout=120,
                )
                for item in resp.json().get("00081199", {}).get("Value", []):
                    outer.stored[item["00081155"]["Value"][0]] += 1
                self.send_response(resp.status_code)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


@pytest.mark.slow(40)
def test_a_lease_shorter_than_the_work_is_renewed_and_nothing_is_done_twice(
    tmp_path: Path, reading: Orthanc
) -> None:
    """Issue #15, 6: a long scan of multi-frame instances and a slow STOW-RS each outlive the
    lease; the worker holding them renews it, so the other worker never takes them over: each
    instance is de-identified once and stored in the archive once."""
    from bridge.sample import make_large_instance

    archive = _SlowArchive(reading.dicomweb, delay=2.0)
    env = bridge_env(
        archive.url,
        None,
        BRIDGE_WORKER__LEASE_SECONDS="0.5",
        BRIDGE_WORKER__DEID_THREADS="1",
        BRIDGE_LOG_LEVEL="info",
    )
    bridge = BridgeProcess(tmp_path / "bridge", env).start()
    other = bridge.worker(1)
    try:
        # One study of three 24-frame instances: the scan of each takes about a second.
        (tmp_path / "in").mkdir()
        study_uid = make_large_instance(tmp_path / "in" / "a.dcm", 12)
        paths = [tmp_path / "in" / "a.dcm"]
        for i in (1, 2):
            ds_path = tmp_path / "in" / f"{'bc'[i - 1]}.dcm"
            make_large_instance(ds_path, 12)
            paths.append(ds_path)
        _same_study(paths, study_uid)
        out = storescu(bridge.dimse_port, paths)
        assert len(acknowledged(out.stdout)) == 3
        case = bridge.wait_forwarded(3, timeout=120)
        assert case["instances"]["forwarded"] == 3
        time.sleep(1.0)  # any late duplicate would arrive now
        assert sorted(archive.stored.values()) == [1, 1, 1], archive.stored
        logs = bridge.log() + (bridge.workdir / "worker-1.log").read_text()
        assert "lease_lost" not in logs
    finally:
        other.terminate()
        other.wait(30)
        bridge.stop()
        archive.stop()


def _same_study(paths: list[Path], study_uid: str) -> None:
    """Put every file into ``study_uid`` (make_large_instance makes one study per file)."""
    from pydicom import dcmread

    for p in paths:
        ds = dcmread(p)
        ds.StudyInstanceUID = study_uid
        ds.save_as(p, enforce_file_format=True)
