"""Pulling studies from the hospital PACS (Orthanc): DICOMweb, DIMSE C-MOVE and C-GET, submitted
through the API and the CLI, with the misconfigurations an administrator meets."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest
import requests

from bridge.sample import SampleStudy, make_study
from conftest import bridge_env
from tests.e2e.conftest import count_study, study_instances
from tests.helpers import leaks
from tests.support.orthanc import Orthanc
from tests.support.peers import BRIDGE_BIN, BridgeProcess

pytestmark = pytest.mark.e2e


def _upload(pacs: Orthanc, tmp_path, n: int = 6, size: int = 64) -> SampleStudy:
    """A study with planted identities stored in the PACS, with its own accession number."""
    accession = f"ACC-{uuid.uuid4().hex[:8].upper()}"
    study = make_study(tmp_path / accession, n, rows=size, columns=size, accession=accession)
    for p in study.paths:
        requests.post(f"{pacs.url}/instances", data=p.read_bytes(), timeout=30).raise_for_status()
    study.planted.append(accession)
    return study


def _post(bridge: BridgeProcess, path: str, body: dict[str, object]) -> requests.Response:
    return requests.post(
        f"{bridge.url}/api/v1{path}",
        json=body,
        headers={"Authorization": f"Bearer {bridge.token}"},
        timeout=60,
    )


def _register(pacs: Orthanc, bridge: BridgeProcess, name: str = "SECONDOPINION") -> None:
    """The bridge as a DICOM node of the PACS (what an administrator does for C-MOVE)."""
    requests.put(
        f"{pacs.url}/modalities/{name}",
        json={"AET": "SECONDOPINION", "Host": "127.0.0.1", "Port": bridge.dimse_port},
        timeout=30,
    ).raise_for_status()


def _cli(
    bridge: BridgeProcess, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BRIDGE_BIN, *args],
        env=bridge.full_env(),
        cwd=bridge.workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_submit_over_dicomweb(tmp_path, hospital, reading, webhook, make_bridge):
    study = _upload(hospital, tmp_path)
    bridge = make_bridge(bridge_env(reading, webhook, BRIDGE_PACS__DICOMWEB_URL=hospital.dicomweb))
    accession = study.planted[-1]

    # Search: the PACS's answer, through the bridge.
    found = bridge.api(f"/studies?accession_number={accession}")
    assert [s["study_instance_uid"] for s in found] == [study.study_uid]
    assert found[0]["instances"] == 6 and found[0]["patient_id"] == "PID-7734521"

    # Bad submissions are refused with a reason, and open no case.
    r = _post(bridge, "/cases", {"study_instance_uid": study.study_uid, "question": "  "})
    assert r.status_code == 422 and "question is empty" in r.json()["detail"]
    r = _post(bridge, "/cases", {"study_instance_uid": study.study_uid, "question": "x" * 2001})
    assert r.status_code == 422 and "longer than 2000" in r.json()["detail"]
    r = _post(bridge, "/cases", {"study_instance_uid": "1.2.3.999", "question": "Surgery?"})
    assert r.status_code == 404 and "no such study" in r.json()["detail"]
    r = _post(bridge, "/cases", {"accession_number": accession, "question": "ok", "priority": "x"})
    assert r.status_code == 422
    assert bridge.api("/cases") == []

    question = "Does the MRI of PLANTEDGIVEN PLANTEDFAMILY (PID-7734521) truly support surgery?"
    report = "Report for PLANTEDFAMILY, PLANTEDGIVEN born 1961-04-17: disc extrusion L4-L5."
    r = _post(
        bridge,
        "/cases",
        {
            "accession_number": accession,
            "question": question,
            "subspecialty": "neuro",
            "priority": "urgent",
            "original_report": report,
        },
    )
    assert r.status_code == 201, r.text
    case = r.json()
    assert case["state"] == "retrieving" and case["source"] == "pull:dicomweb"
    assert case["expected_instances"] == 6 and r.headers["Location"].endswith(case["id"])
    assert "PLANTEDFAMILY" not in case["question"] and "truly support surgery" in case["question"]

    # The same study again while the case is open: 409, naming it.
    r = _post(bridge, "/cases", {"study_instance_uid": study.study_uid, "question": "again"})
    assert r.status_code == 409 and case["id"] in r.json()["detail"]

    done = bridge.wait_forwarded(6)
    assert done["id"] == case["id"] and done["subspecialty"] == "neuro"
    got = study_instances(reading, done["pseudonymized_study_instance_uid"])
    assert len(got) == 6
    for ds in got:
        assert leaks(ds, study.identity) == []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        manifests = [m for m in webhook.received if m["case_id"] == case["id"]]
        if manifests:
            break
        time.sleep(0.2)
    m = manifests[0]
    assert m["priority"] == "urgent" and m["subspecialty"] == "neuro"
    assert "truly support surgery" in m["clinical_question"]
    assert m["original_report"]["scrubbed"] is True
    assert "disc extrusion L4-L5" in m["original_report"]["text"]
    raw = next(b for b, x in zip(webhook.raw, webhook.received, strict=True) if x is m)
    for value in (*study.identity, "1961-04-17"):
        assert value.encode() not in raw, value
    log = bridge.log()
    for value in study.identity:
        assert value not in log, value
    assert '"request_id"' in log
    metrics = requests.get(f"{bridge.url}/metrics", timeout=10)
    assert 'bridge_instances_pulled_total{source="pull:dicomweb"} 6.0' in metrics.text
    assert "bridge_wado_seconds_count" in metrics.text
    assert "bridge_spool_free_bytes" in metrics.text and "bridge_spool_full 0.0" in metrics.text
    assert metrics.headers["X-Request-ID"]
    for value in study.identity:  # no identifying label value
        assert value not in metrics.text, value


def test_submit_over_dimse_with_c_move_from_the_cli(tmp_path, hospital, reading, make_bridge):
    study = _upload(hospital, tmp_path)
    bridge = make_bridge(
        bridge_env(
            reading,
            None,
            BRIDGE_PACS__AE_TITLE=hospital.aet,
            BRIDGE_PACS__HOST="127.0.0.1",
            BRIDGE_PACS__PORT=str(hospital.dicom_port),
            BRIDGE_DIMSE__ALLOWED_CALLING_AETS=json.dumps([hospital.aet]),
        )
    )
    _register(hospital, bridge)
    accession = study.planted[-1]

    out = _cli(bridge, "find", "--accession", accession)
    assert out.returncode == 0, out.stderr
    assert study.study_uid in out.stdout and "PID-7734521" in out.stdout

    out = _cli(
        bridge,
        "submit",
        study.study_uid,
        "--question",
        "Second opinion on the CT, please",
        "--subspecialty",
        "body",
        "--priority",
        "stat",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "forwarded 6" in out.stdout and "retrieved 6/6" in out.stdout
    case = bridge.api("/cases")[0]
    assert case["state"] == "forwarded" and case["source"] == "pull:c-move"
    assert case["priority"] == "stat" and case["calling_ae_title"] is None
    assert '"association"' in bridge.log()  # the listener's lines carry their association
    assert len(study_instances(reading, case["pseudonymized_study_instance_uid"])) == 6

    # Nothing named: a clear message and a non-zero exit code.
    out = _cli(bridge, "submit", "--question", "Q")
    assert out.returncode != 0 and "Study Instance UID or --accession" in out.stderr
    out = _cli(bridge, "submit", "1.2.3.4.5.6.999", "--question", "Q")
    assert out.returncode != 0 and "no such study" in out.stderr


def test_c_get_and_an_unknown_move_destination(tmp_path, hospital, reading, make_bridge):
    study = _upload(hospital, tmp_path, n=4)
    dimse = {
        "BRIDGE_PACS__AE_TITLE": hospital.aet,
        "BRIDGE_PACS__HOST": "127.0.0.1",
        "BRIDGE_PACS__PORT": str(hospital.dicom_port),
        "BRIDGE_SUBMIT__RETRIEVE_ATTEMPTS": "2",
    }
    bridge = make_bridge(
        bridge_env(reading, None, BRIDGE_PACS__MOVE_DESTINATION="NOSUCHNODE", **dimse)
    )
    _register(hospital, bridge)
    r = _post(bridge, "/cases", {"study_instance_uid": study.study_uid, "question": "Q?"})
    assert r.status_code == 201, r.text
    failed = bridge.wait_case(lambda c: c["state"] == "failed", timeout=60)
    assert "move destination NOSUCHNODE" in failed["error"]
    assert "BRIDGE_PACS__MOVE_DESTINATION" in failed["error"]
    bridge.kill()

    # C-GET: the study comes back on the bridge's own association.
    getter = make_bridge(
        bridge_env(reading, None, BRIDGE_PACS__DIMSE_RETRIEVE="c-get", **dimse), name="getter"
    )
    _register(hospital, getter)
    r = _post(getter, "/cases", {"study_instance_uid": study.study_uid, "question": "Q?"})
    assert r.status_code == 201, r.text
    case = getter.wait_forwarded(4)
    assert case["source"] == "pull:c-get"


def test_pacs_unreachable_or_unconfigured(tmp_path, reading, make_bridge):
    from tests.support.orthanc import free_port

    bridge = make_bridge(
        bridge_env(
            reading,
            None,
            BRIDGE_PACS__AE_TITLE="PACS",
            BRIDGE_PACS__HOST="127.0.0.1",
            BRIDGE_PACS__PORT=str(free_port()),
        )
    )
    r = _post(bridge, "/cases", {"study_instance_uid": "1.2.3", "question": "Q?"})
    assert r.status_code == 502 and "unreachable over DICOM" in r.json()["detail"]
    out = _cli(bridge, "find", "--patient-id", "X")
    assert out.returncode == 2 and "unreachable over DICOM" in out.stderr
    bare = make_bridge(bridge_env(reading, None), name="bare")
    r = requests.get(
        f"{bare.url}/api/v1/studies?patient_id=X",
        headers={"Authorization": f"Bearer {bare.token}"},
        timeout=30,
    )
    assert r.status_code == 503 and "BRIDGE_PACS__DICOMWEB_URL" in r.json()["detail"]


def test_priors_travel_with_the_case(tmp_path, hospital, reading, webhook, make_bridge):
    from datetime import date

    from bridge.sample import PlantedPatient

    patient = PlantedPatient(patient_id="PID-PRIORS-9")

    def upload(name: str, day: str, n: int, who: PlantedPatient = patient) -> SampleStudy:
        s = make_study(
            tmp_path / name,
            n,
            rows=64,
            columns=64,
            patient=who,
            study_date=day,
            accession=f"A-{name[:6].upper()}-{uuid.uuid4().hex[:4]}",
        )
        for p in s.paths:
            requests.post(f"{hospital.url}/instances", data=p.read_bytes(), timeout=30)
        return s

    main = upload("main", "20240311", 3)
    prior1 = upload("prior1", "20230101", 2)
    prior2 = upload("prior2", "20220615", 2)
    upload("oldest", "20150101", 1)  # beyond the two most recent: not sent
    upload("later", "20250101", 1)  # after the study: not a prior
    # Issue #15, 5: the most recent earlier study has the Patient ID but no issuer and another
    # birth date: another person's, never sent (it was, while a missing issuer passed).
    stranger = PlantedPatient(patient_id=patient.patient_id, issuer="", birth_date="19900101")
    upload("stranger", "20231201", 2, stranger)
    bridge = make_bridge(
        bridge_env(
            reading,
            webhook,
            BRIDGE_PACS__AE_TITLE=hospital.aet,
            BRIDGE_PACS__HOST="127.0.0.1",
            BRIDGE_PACS__PORT=str(hospital.dicom_port),
        )
    )
    _register(hospital, bridge)
    r = _post(
        bridge, "/cases", {"study_instance_uid": main.study_uid, "question": "Growth?", "priors": 2}
    )
    assert r.status_code == 201, r.text
    assert r.json()["expected_instances"] == 7
    case = bridge.wait_forwarded(7)
    assert case["id"] == r.json()["id"] and len(bridge.api("/cases")) == 1
    priors = {p["original_study_instance_uid"]: p for p in case["priors"]}
    assert set(priors) == {prior1.study_uid, prior2.study_uid}
    assert {p["matched_by"] for p in priors.values()} == {"patient_id+issuer"}
    assert case["priors_unmatched"] == 1
    assert all(p["forwarded"] == 2 for p in priors.values())

    # Same pseudonymous patient, same date shift: the intervals between the studies survive.
    def shifted(pseudo_study: str) -> date:
        ds = study_instances(reading, pseudo_study)[0]
        assert ds.PatientID == case["pseudonymous_patient_id"]
        return date.fromisoformat(f"{ds.StudyDate[:4]}-{ds.StudyDate[4:6]}-{ds.StudyDate[6:]}")

    d_main = shifted(case["pseudonymized_study_instance_uid"])
    d_prior1 = shifted(priors[prior1.study_uid]["pseudonymized_study_instance_uid"])
    assert (d_main - d_prior1).days == (date(2024, 3, 11) - date(2023, 1, 1)).days
    assert d_main != date(2024, 3, 11)

    deadline = time.monotonic() + 30
    while not (m := [x for x in webhook.received if x["case_id"] == case["id"]]):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert m[0]["study"]["study_instance_uid"] == case["pseudonymized_study_instance_uid"]
    assert m[0]["study"]["instance_count"] == 3
    assert sorted(p["instance_count"] for p in m[0]["priors"]) == [2, 2]
    assert {p["study_instance_uid"] for p in m[0]["priors"]} == {
        p["pseudonymized_study_instance_uid"] for p in priors.values()
    }


def test_a_guarded_pacs_credentials_and_called_ae_title(tmp_path, reading, make_bridge):
    """A PACS with HTTP authentication and a checked called AE title: the right settings work,
    the wrong ones get a message naming the setting."""
    pacs = Orthanc(
        "GUARDED",
        tmp_path / "guarded",
        aet="GUARDEDPACS",
        extra={
            "AuthenticationEnabled": True,
            "RegisteredUsers": {"bridge": "s3cret-pw"},
            "DicomCheckCalledAet": True,
        },
    ).start()
    try:
        study = make_study(tmp_path / "s", 2, rows=64, columns=64, accession="ACC-GUARD")
        for p in study.paths:
            requests.post(
                f"{pacs.url}/instances",
                data=p.read_bytes(),
                auth=("bridge", "s3cret-pw"),
                timeout=30,
            ).raise_for_status()
        web = {"BRIDGE_PACS__DICOMWEB_URL": pacs.dicomweb, "BRIDGE_PACS__USERNAME": "bridge"}
        good = make_bridge(
            bridge_env(reading, None, BRIDGE_PACS__PASSWORD="s3cret-pw", **web), name="good"
        )
        assert [
            s["study_instance_uid"] for s in good.api("/studies?accession_number=ACC-GUARD")
        ] == [study.study_uid]
        bad = make_bridge(
            bridge_env(reading, None, BRIDGE_PACS__PASSWORD="wrong", **web), name="bad"
        )
        r = requests.get(
            f"{bad.url}/api/v1/studies?accession_number=ACC-GUARD",
            headers={"Authorization": f"Bearer {bad.token}"},
            timeout=30,
        )
        assert r.status_code == 502 and "BRIDGE_PACS__PASSWORD" in r.json()["detail"]
        assert "wrong" not in r.text and "s3cret" not in bad.log()

        dimse = make_bridge(
            bridge_env(
                reading,
                None,
                BRIDGE_PACS__AE_TITLE="NOTTHEPACS",
                BRIDGE_PACS__HOST="127.0.0.1",
                BRIDGE_PACS__PORT=str(pacs.dicom_port),
            ),
            name="dimse",
        )
        out = _cli(dimse, "find", "--accession", "ACC-GUARD")
        assert out.returncode == 2 and "BRIDGE_PACS__AE_TITLE" in out.stderr, out.stderr
    finally:
        pacs.stop()


def test_a_called_ae_title_refusal_is_never_reported_as_unreachable(tmp_path):
    """Orthanc rejects a wrong called AE title and closes the connection at once; pynetdicom
    3.0 then sometimes (about 3 in 100 here) reports the association aborted though the
    A-ASSOCIATE-RJ arrived. The bridge reads the rejection itself: every try names the
    setting to fix, none says "unreachable"."""
    from bridge.config import DimseSettings, PacsSettings
    from bridge.domain.errors import PacsRefusedError
    from bridge.peers.pacs import StudyQuery
    from bridge.peers.pacs_dimse import DimsePacs

    pacs = Orthanc(
        "CHECKED", tmp_path / "checked", aet="CHECKEDPACS", extra={"DicomCheckCalledAet": True}
    ).start()
    try:
        client = DimsePacs(
            PacsSettings(ae_title="NOTTHEPACS", host="127.0.0.1", port=pacs.dicom_port),
            DimseSettings(),
            lambda: tmp_path / "unused.dcm",
        )
        messages = set()
        for _ in range(200):
            with pytest.raises(PacsRefusedError) as refused:
                client.search(StudyQuery(accession="ANY"))
            messages.add(refused.value.message)
        assert messages == {
            "the PACS does not answer to the called AE title NOTTHEPACS: check "
            "BRIDGE_PACS__AE_TITLE"
        }
    finally:
        pacs.stop()


class _CuttingProxy:
    """A real HTTP proxy in front of the PACS's DICOMweb that breaks the first series-level
    retrieve halfway through its body (a network cut), and records every path asked for."""

    def __init__(self, upstream: str) -> None:
        import re
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from tests.support.orthanc import free_port

        self.paths: list[str] = []
        self.cut = False
        outer = self
        series_only = re.compile(r"/studies/[^/]+/series/[^/?]+$")

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                outer.paths.append(self.path)
                r = requests.get(
                    upstream + self.path,
                    headers={"Accept": self.headers.get("Accept", "*/*")},
                    timeout=60,
                )
                body = r.content
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("Content-Type", ""))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                path = self.path.split("?")[0]
                if series_only.search(path) and not outer.cut:
                    outer.cut = True
                    self.wfile.write(body[: int(len(body) * 0.6)])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_interrupted_retrieve_resumes_without_fetching_again(
    tmp_path, hospital, reading, make_bridge
):
    study = _upload(hospital, tmp_path, n=8, size=256)  # two series of four, 128 KB each
    proxy = _CuttingProxy(hospital.url)
    try:
        bridge = make_bridge(
            bridge_env(reading, None, BRIDGE_PACS__DICOMWEB_URL=f"{proxy.url}/dicom-web")
        )
        r = _post(bridge, "/cases", {"study_instance_uid": study.study_uid, "question": "Q?"})
        assert r.status_code == 201, r.text
        case = bridge.wait_forwarded(8)
        assert proxy.cut
        assert '"pull.retry"' in bridge.log() and case["error"] is None
        series_gets = [
            p
            for p in proxy.paths
            if "/series/" in p
            and "/instances/" not in p
            and not p.endswith("/instances")
            and "?" not in p
        ]
        instance_gets = [p for p in proxy.paths if "/instances/" in p]
        # The cut series was not asked for again as a whole: only its instances that did not
        # arrive whole, one by one; the other series in one request.
        assert len(series_gets) == 2 and len(set(series_gets)) == 2
        assert 0 < len(instance_gets) < 4
        assert len(set(instance_gets)) == len(instance_gets)
    finally:
        proxy.stop()


@pytest.mark.slow(35)
def test_a_full_spool_pauses_pulls_and_loses_nothing(tmp_path, hospital, reading, make_bridge):
    """A spool quota smaller than the study: the pull pauses (DICOMweb: the sink refuses; C-MOVE:
    our listener answers 0xA700 to the PACS), forwarding frees room, the pull resumes with what
    is missing; every instance arrives, once."""
    study = _upload(hospital, tmp_path, n=12, size=256)  # ~130 KB each, ~1.6 MB in all
    quota = {"BRIDGE_SPOOL__QUOTA_BYTES": "600000"}
    web = make_bridge(
        bridge_env(reading, None, BRIDGE_PACS__DICOMWEB_URL=hospital.dicomweb, **quota), name="web"
    )
    r = _post(web, "/cases", {"study_instance_uid": study.study_uid, "question": "Q?"})
    assert r.status_code == 201, r.text
    case = web.wait_forwarded(12, timeout=180)
    assert '"pull.paused"' in web.log()
    assert count_study(reading, case["pseudonymized_study_instance_uid"]) == 12
    web.kill()

    move = make_bridge(
        bridge_env(
            reading,
            None,
            BRIDGE_PACS__AE_TITLE=hospital.aet,
            BRIDGE_PACS__HOST="127.0.0.1",
            BRIDGE_PACS__PORT=str(hospital.dicom_port),
            **quota,
        ),
        name="move",
    )
    _register(hospital, move)
    r = _post(move, "/cases", {"study_instance_uid": study.study_uid, "question": "Q?"})
    assert r.status_code == 201, r.text
    moved = move.wait_forwarded(12, timeout=180)
    log = move.log()
    assert '"store.refused"' in log  # the listener answered 0xA700 to some sub-operations
    assert moved["instances"]["total"] == 12
