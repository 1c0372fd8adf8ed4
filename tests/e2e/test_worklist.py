"""The reading queue as a DICOM worklist (UPS-RS): the reading side finds each forwarded case as a
workitem, fetches its input study with dicomweb-client from the reading archive, claims it,
completes it once findings are in, or cancels it; every refusal says why.

dicomweb-client (0.61) has no UPS-RS methods, so the worklist calls are plain HTTP with DICOM JSON
read by pydicom, as a reading platform's own client makes them."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.config import strict_reading
from pydicom.dataset import Dataset

from bridge.sample import make_study
from conftest import bridge_env
from tests.helpers import add_user, leaks
from tests.support.peers import BridgeProcess, storescu

pytestmark = pytest.mark.e2e

READER = "reader-token-0123456789"
VIEWER = "viewer-token-0123456789"
UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"


class ReadingSide:
    """The reading platform's client of the bridge's worklist."""

    def __init__(self, bridge: BridgeProcess, token: str = READER) -> None:
        self.root = f"{bridge.url}/dicom-web/workitems"
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"}

    def search(self, **params: str) -> requests.Response:
        return requests.get(self.root, params=params, headers=self.headers, timeout=30)

    def items(self, **params: str) -> list[Dataset]:
        r = self.search(**params)
        assert r.status_code in (200, 204), r.text
        return [] if r.status_code == 204 else [_read(d) for d in r.json()]

    def get(self, uid: str) -> Dataset:
        r = requests.get(f"{self.root}/{uid}", headers=self.headers, timeout=30)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/dicom+json")
        (item,) = r.json()
        assert "00081195" not in item  # the Transaction UID is never given out
        return _read(item)

    def state(self, uid: str, state: str, transaction: str | None) -> requests.Response:
        body: dict[str, Any] = {"00741000": {"vr": "CS", "Value": [state]}}
        if transaction:
            body["00081195"] = {"vr": "UI", "Value": [transaction]}
        return requests.put(
            f"{self.root}/{uid}/state",
            data=json.dumps(body),
            headers={**self.headers, "Content-Type": "application/dicom+json"},
            timeout=30,
        )

    def cancel(self, uid: str, reason: str) -> requests.Response:
        body = {"00741238": {"vr": "LT", "Value": [reason]}}
        return requests.post(
            f"{self.root}/{uid}/cancelrequest",
            data=json.dumps(body),
            headers={**self.headers, "Content-Type": "application/dicom+json"},
            timeout=30,
        )


def _read(item: dict[str, Any]) -> Dataset:
    """A workitem as DICOM, every value checked against its VR (length, characters)."""
    with strict_reading():
        return Dataset.from_json(item)


def _txn() -> str:
    return f"2.25.{uuid.uuid4().int}"


def _refused(r: requests.Response, status: int, words: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert words in r.json()["detail"], r.text
    assert words in r.headers["Warning"]


def test_the_reading_side_works_the_worklist(tmp_path, hospital, reading, make_bridge):
    bridge = make_bridge(
        bridge_env(
            reading,
            None,
            BRIDGE_PACS__DICOMWEB_URL=hospital.dicomweb,
            BRIDGE_HTTP__SECURE_COOKIES="false",
            BRIDGE_API_TOKENS=json.dumps(
                [
                    {"name": "reading-hub", "token": READER, "role": "reader"},
                    {"name": "ward", "token": VIEWER, "role": "viewer"},
                ]
            ),
        )
    )
    studies = [make_study(tmp_path / f"s{i}", 3, rows=64, columns=64) for i in range(2)]
    for study in studies:
        for p in study.paths:
            requests.post(f"{hospital.url}/instances", data=p.read_bytes(), timeout=30)
        storescu(bridge.dimse_port, study.paths)
    cases = [
        bridge.wait_case(
            lambda c, s=s: (
                c["original_study_instance_uid"] == s.study_uid
                and c["state"] == "forwarded"
                and c["instances"]["forwarded"] == 3
            )
        )
        for s in studies
    ]
    side = ReadingSide(bridge)

    # Who may: the reading side's token; a viewer's is refused, no token is 401.
    assert ReadingSide(bridge, VIEWER).search().status_code == 403
    assert requests.get(side.root, timeout=30).status_code == 401

    # Two cases, two SCHEDULED workitems, the one forwarded first first.
    scheduled = side.items(ProcedureStepState="SCHEDULED")
    starts = [w.ScheduledProcedureStepStartDateTime for w in scheduled]
    assert starts == sorted(starts)
    by_case = {
        w.ReferencedRequestSequence[0].PlacerOrderNumberImagingServiceRequest: w for w in scheduled
    }
    assert sorted(by_case) == sorted(c["id"] for c in cases)
    first, second = (by_case[c["id"]] for c in cases)
    case = cases[0]
    assert first.SOPClassUID == UPS_PUSH
    assert first.ProcedureStepState == "SCHEDULED"
    assert first.WorklistLabel == case["subspecialty"]
    assert first.ScheduledProcedureStepPriority == {"stat": "HIGH", "urgent": "MEDIUM"}.get(
        case["priority"], "LOW"
    )
    assert first.ScheduledWorkitemCodeSequence[0].CodeValue == "110005"
    assert first.PatientID == case["pseudonymous_patient_id"]
    assert (
        first.ReferencedRequestSequence[0].StudyInstanceUID
        == (case["pseudonymized_study_instance_uid"])
    )
    assert first.ScheduledProcedureStepStartDateTime.startswith(
        case["forwarded_at"][:10].replace("-", "")
    )
    assert first.ExpectedCompletionDateTime > first.ScheduledProcedureStepStartDateTime
    # Nothing of the patient: the workitem holds pseudonyms and routing only.
    assert leaks(first, studies[0].identity) == []
    assert studies[0].study_uid not in json.dumps(first.to_json_dict())

    # The input: every instance sent, with its study's WADO-RS URL on the reading archive;
    # the reading side fetches it there with dicomweb-client.
    inputs = first.InputInformationSequence
    listed = {ref.ReferencedSOPInstanceUID for i in inputs for ref in i.ReferencedSOPSequence}
    assert len(listed) == 3
    (url,) = {i.WADORSRetrievalSequence[0].RetrieveURL for i in inputs}
    root, _, study_uid = url.rpartition("/studies/")
    assert study_uid == first.ReferencedRequestSequence[0].StudyInstanceUID
    assert {i.StudyInstanceUID for i in inputs} == {study_uid}
    archive = DICOMwebClient(url=root)
    fetched = archive.retrieve_study(study_uid)
    assert {str(ds.SOPInstanceUID) for ds in fetched} == listed
    assert {str(ds.SeriesInstanceUID) for ds in fetched} == {i.SeriesInstanceUID for i in inputs}

    # Search keys: by label, by priority, by state; unknown keys named in a Warning.
    assert len(side.items(WorklistLabel=case["subspecialty"])) == 2
    assert side.search(ScheduledProcedureStepPriority="HIGH").status_code == (
        200 if case["priority"] == "stat" else 204
    )
    r = side.search(PatientName="X*", ProcedureStepState="SCHEDULED")
    assert r.status_code == 200 and "PatientName" in r.headers["Warning"]
    _refused(side.search(ProcedureStepState="DONE"), 400, "ProcedureStepState")
    _refused(side.search(**{"a\r\nX-Evil: 1": "1"}), 400, "attribute keywords or tags")
    assert side.items(StudyInstanceUID=study_uid)[0].SOPInstanceUID == first.SOPInstanceUID

    # Bad requests and a workitem the bridge never made.
    _refused(side.state("2.25.12345", "IN PROGRESS", _txn()), 404, "no workitem")
    assert (
        requests.get(f"{side.root}/2.25.12345", headers=side.headers, timeout=30).status_code == 404
    )
    _refused(side.state(first.SOPInstanceUID, "IN PROGRESS", None), 400, "Transaction UID")
    _refused(side.state(first.SOPInstanceUID, "FINISHED", _txn()), 400, "ProcedureStepState")
    r = requests.put(
        f"{side.root}/{first.SOPInstanceUID}/state",
        data=b"not json",
        headers={**side.headers, "Content-Type": "application/dicom+json"},
        timeout=30,
    )
    _refused(r, 400, "not JSON")
    _refused(side.state(first.SOPInstanceUID, "COMPLETED", _txn()), 409, "not yet IN PROGRESS")
    r = requests.post(side.root, json=[{}], headers=side.headers, timeout=30)
    assert r.status_code == 405 and "one per forwarded case" in r.json()["detail"]

    # One reader claims it; a second claim is refused; the first may say it again.
    mine, theirs = _txn(), _txn()
    assert side.state(first.SOPInstanceUID, "IN PROGRESS", mine).status_code == 200
    _refused(side.state(first.SOPInstanceUID, "IN PROGRESS", theirs), 409, "another reader")
    again = side.state(first.SOPInstanceUID, "IN PROGRESS", mine)
    assert again.status_code == 200 and "already IN PROGRESS" in again.headers["Warning"]
    assert side.get(first.SOPInstanceUID).ProcedureStepState == "IN PROGRESS"
    assert [w.SOPInstanceUID for w in side.items(ProcedureStepState="SCHEDULED")] == [
        second.SOPInstanceUID
    ]

    # Completion needs findings; only the claimant completes.
    _refused(side.state(first.SOPInstanceUID, "COMPLETED", mine), 409, "no findings")
    findings = {
        "study_instance_uid": study_uid,
        "reader": {"name": "Ana Lee", "organization": "Neuro Reading Group"},
        "status": "final",
        "findings": "No acute abnormality.",
        "impression": "Normal study.",
        "agreement": "concordant",
        "signed_at": "2026-12-03T10:15:00Z",
    }
    r = requests.post(
        f"{bridge.url}/api/v1/findings",
        json=findings,
        headers={"Authorization": f"Bearer {READER}"},
        timeout=30,
    )
    assert r.status_code == 202, r.text
    _refused(side.state(first.SOPInstanceUID, "COMPLETED", theirs), 409, "another reader")
    assert side.get(first.SOPInstanceUID).ProcedureStepState == "IN PROGRESS"  # still claimed
    assert side.state(first.SOPInstanceUID, "COMPLETED", mine).status_code == 200
    done = side.get(first.SOPInstanceUID)
    assert done.ProcedureStepState == "COMPLETED"
    performed = done.UnifiedProcedureStepPerformedProcedureSequence[0]
    assert (
        performed.PerformedProcedureStepEndDateTime >= performed.PerformedProcedureStepStartDateTime
    )
    _refused(side.state(first.SOPInstanceUID, "CANCELED", mine), 409, "can no longer change")
    _refused(side.cancel(first.SOPInstanceUID, "too late"), 409, "COMPLETED")

    # The other case: a cancellation request while SCHEDULED cancels it, with its reason.
    r = side.cancel(second.SOPInstanceUID, "outside our subspecialty")
    assert r.status_code == 202, r.text
    gone = side.get(second.SOPInstanceUID)
    assert gone.ProcedureStepState == "CANCELED"
    assert gone.ProcedureStepProgressInformationSequence[0].ReasonForCancellation == (
        "outside our subspecialty"
    )
    _refused(side.state(second.SOPInstanceUID, "IN PROGRESS", _txn()), 409, "CANCELED")
    assert side.search(ProcedureStepState="SCHEDULED").status_code == 204

    # The hospital's administrator offers the canceled case again: a new workitem, SCHEDULED
    # (an ended one stays ended); only a canceled one can be offered again.
    admin = {"Authorization": f"Bearer {bridge.token}"}
    again_url = f"{bridge.url}/api/v1/cases/{cases[1]['id']}/workitem/offer-again"
    assert (
        requests.post(
            again_url, headers={"Authorization": f"Bearer {READER}"}, timeout=30
        ).status_code
        == 403
    )
    # ... from the case page ("Offer again", an administrator's form with its CSRF token).
    add_user(bridge, "ada", "correct horse battery", "admin")
    console = requests.Session()
    r = console.post(
        f"{bridge.url}/login",
        data={"username": "ada", "password": "correct horse battery", "next": "/cases"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    page = console.get(f"{bridge.url}/cases/{cases[1]['id']}", timeout=30).text
    assert "Offer again" in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = console.post(f"{bridge.url}/cases/{cases[1]['id']}/workitem/offer-again", data={})
    assert r.status_code == 403  # no CSRF token, nothing done
    r = console.post(
        f"{bridge.url}/cases/{cases[1]['id']}/workitem/offer-again", data={"csrf": csrf}
    )
    assert r.status_code == 200 and "Offer again" not in r.text  # back on the case page
    offered = bridge.api(f"/cases/{cases[1]['id']}")["workitem"]["uid"]
    assert offered != second.SOPInstanceUID
    assert [w.SOPInstanceUID for w in side.items(ProcedureStepState="SCHEDULED")] == [offered]
    assert (
        requests.get(
            f"{side.root}/{second.SOPInstanceUID}", headers=side.headers, timeout=30
        ).status_code
        == 404
    )
    r = requests.post(again_url, headers=admin, timeout=30)
    assert r.status_code == 409 and "SCHEDULED" in r.json()["detail"]
    r = requests.post(
        f"{bridge.url}/api/v1/cases/{case['id']}/workitem/offer-again", headers=admin, timeout=30
    )
    assert r.status_code == 409 and "COMPLETED" in r.json()["detail"]
    assert side.cancel(offered, "still not ours").status_code == 202

    # What the operator sees: the case's worklist state, the audit trail, the metrics.
    seen = bridge.api(f"/cases/{case['id']}")["workitem"]
    assert seen["state"] == "COMPLETED" and seen["performer"] == "api:reading-hub"
    other = bridge.api(f"/cases/{cases[1]['id']}")["workitem"]
    assert other["state"] == "CANCELED" and other["cancel_reason"] == "still not ours"
    assert other["uid"] == offered
    actions = [e["action"] for e in bridge.api(f"/audit?case_id={case['id']}")]
    offered_actions = [e["action"] for e in bridge.api(f"/audit?case_id={cases[1]['id']}")]
    assert "worklist.offered_again" in offered_actions
    assert "worklist.claimed" in actions and "worklist.completed" in actions
    metrics = requests.get(f"{bridge.url}/metrics", timeout=30).text
    assert 'bridge_workitems{state="COMPLETED"} 1.0' in metrics
    assert 'bridge_workitems{state="CANCELED"} 1.0' in metrics  # the one offered again
    assert "worklist.state" in bridge.log()
    assert not [p for p in studies[0].identity if p.lower() in bridge.log().lower()]
