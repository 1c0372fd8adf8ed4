"""What the bridge keeps at rest (issue #15, 9): with the vault encrypted, nothing else undoes
it. The state store holds no original SOP or Series Instance UID (keyed references instead);
report files in the spool are encrypted; a returned report's file is deleted after
``findings.report_retention_days`` (0: at once), and an amendment still names its predecessor."""

from __future__ import annotations

import json
import sqlite3
import time
from io import BytesIO

import pytest
import requests
from pydicom import dcmread

from bridge.sample import make_study
from bridge.store.vault_crypto import new_key
from conftest import bridge_env
from tests.e2e.conftest import study_instances
from tests.e2e.test_findings import findings, post
from tests.support.peers import storescu

pytestmark = pytest.mark.e2e


def _every_value(db) -> str:
    """Every text value of every table of the state store, as one string."""
    conn = sqlite3.connect(db)
    try:
        out = []
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            for row in conn.execute(f'SELECT * FROM "{table}"'):  # noqa: S608
                out.extend(str(v) for v in row if v is not None)
        return "\n".join(out)
    finally:
        conn.close()


def test_nothing_at_rest_undoes_the_vault(tmp_path, hospital, reading, make_bridge):
    bridge = make_bridge(
        bridge_env(
            reading,
            None,
            BRIDGE_PACS__DICOMWEB_URL=hospital.dicomweb,
            BRIDGE_VAULT__KEYS=json.dumps([new_key()]),
            BRIDGE_FINDINGS__REPORT_RETENTION_DAYS="0",
        )
    )
    # Not in the hospital PACS yet: the report will be held (its file kept) until it is.
    study = make_study(tmp_path / "s", 3, rows=32, columns=32)
    storescu(bridge.dimse_port, study.paths)
    case = bridge.wait_forwarded(3)
    # The same instance sent again is still recognised (replaced, not added).
    storescu(bridge.dimse_port, study.paths[:1])
    time.sleep(1.0)
    case = bridge.wait_forwarded(3)
    assert case["instances"]["total"] == 3

    db = bridge.workdir / "data" / "bridge.sqlite3"
    at_rest = _every_value(db)
    originals = [str(dcmread(p).SOPInstanceUID) for p in study.paths] + study.series_uids
    assert [u for u in originals if u in at_rest] == []
    for value in ("PLANTEDFAMILY", "PID-7734521", "19610417"):
        assert value not in at_rest

    seen = study_instances(reading, case["pseudonymized_study_instance_uid"])
    r = post(bridge, f"/cases/{case['id']}/findings", findings(str(seen[0].SOPInstanceUID)))
    assert r.status_code == 202, r.text
    held = bridge.wait_case(  # the SR and its Key Object Selection
        lambda c: (
            c["id"] == case["id"]
            and len(c["reports"]) == 2
            and {x["state"] for x in c["reports"]} == {"held"}
        )
    )
    reports = bridge.workdir / "data" / "spool" / "reports"
    files = [p for p in reports.iterdir() if p.is_file()]
    assert files
    for f in files:  # re-identified, and encrypted at rest
        data = f.read_bytes()
        assert b"PLANTEDFAMILY" not in data and b"PID-7734521" not in data
        assert b"DICM" not in data[:200]

    # The study reaches the PACS; the held report is retried, returned, and its file deleted.
    for p in study.paths:
        requests.post(f"{hospital.url}/instances", data=p.read_bytes(), timeout=30)
    for report in held["reports"]:
        r = requests.post(
            f"{bridge.url}/api/v1/quarantine/reports/{report['id']}/retry",
            headers={"Authorization": f"Bearer {bridge.token}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
    bridge.wait_case(lambda c: c["id"] == case["id"] and c["state"] == "returned")
    deadline = time.monotonic() + 30
    while [p for p in reports.iterdir() if p.is_file()]:
        assert time.monotonic() < deadline, list(reports.iterdir())
        time.sleep(0.3)

    # An amendment still names the returned report as its predecessor (from the state store).
    r = post(
        bridge, f"/cases/{case['id']}/findings", findings(str(seen[0].SOPInstanceUID), "amended")
    )
    assert r.status_code == 202, r.text
    amended = r.json()["sop_instance_uid"]
    bridge.wait_case(
        lambda c: c["id"] == case["id"] and [x["state"] for x in c["reports"]] == ["returned"] * 4
    )
    found = requests.post(
        f"{hospital.url}/tools/find",
        timeout=30,
        json={"Level": "Instance", "Query": {"SOPInstanceUID": amended}},
    ).json()
    sr = dcmread(
        BytesIO(requests.get(f"{hospital.url}/instances/{found[0]}/file", timeout=30).content)
    )
    assert sr.PatientID == "PID-7734521"
    ref = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == held["reports"][0]["sop_instance_uid"]


def test_free_text_can_wait_for_a_persons_review(tmp_path, reading, webhook, make_bridge):
    """Issue #15, 10: with submit.free_text_review the images go, the manifest (which carries
    the question) waits until an administrator approves the text, as it is or edited."""
    bridge = make_bridge(bridge_env(reading, webhook, BRIDGE_SUBMIT__FREE_TEXT_REVIEW="true"))
    study = make_study(tmp_path / "s", 2, rows=32, columns=32)
    storescu(bridge.dimse_port, study.paths)
    case = bridge.wait_forwarded(2)
    assert case["question"]  # the planted request's question, scrubbed
    time.sleep(3)
    assert [m for m in webhook.received if m["case_id"] == case["id"]] == []
    waiting = bridge.api(f"/cases/{case['id']}")
    assert "review" in (waiting["error"] or "") and waiting["text_reviewed_by"] is None

    r = requests.post(
        f"{bridge.url}/api/v1/cases/{case['id']}/free-text",
        json={"question": "R/O glioma, please compare with prior."},
        headers={"Authorization": f"Bearer {bridge.token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while not (sent := [m for m in webhook.received if m["case_id"] == case["id"]]):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert sent[0]["clinical_question"] == "R/O glioma, please compare with prior."
    reviewed = bridge.api(f"/cases/{case['id']}")
    assert reviewed["text_reviewed_by"] == "api" and reviewed["error"] is None
