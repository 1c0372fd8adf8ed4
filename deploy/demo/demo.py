"""The demo's last step: push a planted study from the hospital PACS to the bridge and show
what arrives at the reading archive. Run by deploy/demo/demo.sh (``make demo``)."""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
import uuid
from io import BytesIO
from pathlib import Path

import requests
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID

from bridge.sample import make_study

HOSPITAL = "http://127.0.0.1:8142"
READING = "http://127.0.0.1:8143"
BRIDGE = "http://127.0.0.1:8080"


def flatten(ds: Dataset, prefix: str = "") -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for elem in ds:
        if elem.tag == 0x7FE00010:
            continue
        key = f"{prefix}{elem.tag}"
        name = elem.name if not elem.tag.is_private else f"private {elem.tag}"
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                out.update(flatten(item, f"{key}[{i}]."))
            if not elem.value:
                out[key] = (name, "(empty sequence)")
        else:
            val = str(elem.value)
            out[key] = (name, val if len(val) <= 48 else val[:45] + "...")
    return out


def show_ehr(folder: Path) -> None:
    """Step 7: what the hospital's RIS and FHIR server received, and the PDF."""
    print("\n7. The result reaches the treating physician's EHR")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if list(folder.glob("oru-*.hl7")) and list(folder.glob("fhir-*.json")):
            break
        time.sleep(0.5)
    orus = sorted(folder.glob("oru-*.hl7"))
    if not orus:
        print("   no ORU^R01 yet; see var/demo/bridge.log")
        return
    print(f"   The RIS received an ORU^R01 over MLLP ({orus[-1]}), acknowledged AA:")
    for line in orus[-1].read_text().splitlines():
        print(f"     {line[:110]}{'...' if len(line) > 110 else ''}")
    bundles = sorted(folder.glob("fhir-*.json"))
    if bundles:
        bundle = json.loads(bundles[-1].read_text())
        report = bundle["entry"][2]["resource"]
        print(f"   The FHIR server received a transaction ({bundles[-1]}):")
        print(
            f"     DiagnosticReport {report['code']['coding'][0]['code']} status "
            f"{report['status']}, conclusion: {report.get('conclusion', '')[:80]!r}"
        )
        for form in report.get("presentedForm", []):
            if form["contentType"] == "application/pdf":
                pdf = folder.parent / "second-opinion.pdf"
                pdf.write_bytes(base64.b64decode(form["data"]))
                print(f"     the PDF, summary for the patient first: {pdf}")


def _state(state: str, txn: str) -> dict[str, object]:
    return {
        "00741000": {"vr": "CS", "Value": [state]},
        "00081195": {"vr": "UI", "Value": [txn]},
    }


def claim_workitem(auth: dict[str, str], pseudo_study: str) -> tuple[str, str] | None:
    """The reading side's view: find the case's workitem and claim it (IN PROGRESS)."""
    r = requests.get(
        f"{BRIDGE}/dicom-web/workitems",
        params={"ProcedureStepState": "SCHEDULED", "StudyInstanceUID": pseudo_study},
        headers=auth,
        timeout=30,
    )
    if r.status_code != 200:
        print(f"   no workitem for the case ({r.status_code}); see var/demo/bridge.log")
        return None
    item = Dataset.from_json(r.json()[0])
    uid = str(item.SOPInstanceUID)
    inputs = item.InputInformationSequence
    print(
        f"   GET /dicom-web/workitems: {item.ProcedureStepLabel}, "
        f"{item.ScheduledProcedureStepPriority} priority, due {item.ExpectedCompletionDateTime}"
    )
    print(f"     question: {item.CommentsOnTheScheduledProcedureStep!r}")
    print(
        f"     input: {sum(len(i.ReferencedSOPSequence) for i in inputs)} instances at "
        f"{inputs[0].WADORSRetrievalSequence[0].RetrieveURL}"
    )
    txn = f"2.25.{uuid.uuid4().int}"
    r = requests.put(
        f"{BRIDGE}/dicom-web/workitems/{uid}/state",
        json=_state("IN PROGRESS", txn),
        headers=auth,
        timeout=30,
    )
    print(f"   claimed with a transaction UID of its own: {r.status_code}, IN PROGRESS")
    return uid, txn


def complete_workitem(auth: dict[str, str], uid: str, txn: str) -> None:
    r = requests.put(
        f"{BRIDGE}/dicom-web/workitems/{uid}/state",
        json=_state("COMPLETED", txn),
        headers=auth,
        timeout=30,
    )
    got = requests.get(f"{BRIDGE}/dicom-web/workitems/{uid}", headers=auth, timeout=30)
    state = Dataset.from_json(got.json()[0]).ProcedureStepState if got.ok else "?"
    print(f"   the worklist item, completed by the reading hub: {r.status_code}, {state}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--token", required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--instances", type=int, default=20)
    args = ap.parse_args()
    auth = {"Authorization": f"Bearer {args.token}"}

    print(f"\n1. Generating a CT study of {args.instances} instances with planted identities")
    study = make_study(args.work / "sample" / str(int(time.time())), args.instances)
    print(
        f"   {len(study.planted)} identifying values planted (patient, physicians, "
        "institution, dates, accession, free text, nested sequences, private tags, UIDs)"
    )

    print("2. Storing it in the hospital PACS (Orthanc on :8142)")
    orthanc_study = None
    for p in study.paths:
        r = requests.post(f"{HOSPITAL}/instances", data=p.read_bytes(), timeout=60)
        r.raise_for_status()
        orthanc_study = r.json()["ParentStudy"]

    print("3. The PACS sends the study to SECONDOPINION (C-STORE to the bridge on :11112)")
    r = requests.post(
        f"{HOSPITAL}/modalities/SECONDOPINION/store",
        json={"Resources": [orthanc_study], "Synchronous": True},
        timeout=300,
    )
    r.raise_for_status()

    print("4. Waiting for the bridge: receiving -> received -> de-identified -> forwarded")
    deadline = time.monotonic() + 180
    case, last_state = None, None
    while time.monotonic() < deadline:
        cases = requests.get(f"{BRIDGE}/api/v1/cases", headers=auth, timeout=10).json()
        case = next((c for c in cases if c["original_study_instance_uid"] == study.study_uid), None)
        if case and case["state"] != last_state:
            last_state = case["state"]
            n = case["instances"]
            print(
                f"   case {case['id']}: {last_state:12} "
                f"(received {n['total']}, forwarded {n['forwarded']})"
            )
        if case and case["state"] in ("forwarded", "failed"):
            break
        time.sleep(0.5)
    if not case or case["state"] != "forwarded":
        print("   the case did not reach 'forwarded'; see var/demo/bridge.log", file=sys.stderr)
        return 1

    pseudo_study = case["pseudonymized_study_instance_uid"]
    found = requests.post(
        f"{READING}/tools/find",
        json={"Level": "Instance", "Query": {"StudyInstanceUID": pseudo_study}, "Expand": False},
        timeout=30,
    ).json()
    studies = requests.post(
        f"{READING}/tools/find",
        json={"Level": "Study", "Query": {"StudyInstanceUID": pseudo_study}},
        timeout=30,
    ).json()
    print(
        f"5. The reading archive (Orthanc on :8143) holds {len(found)} instances of the "
        "de-identified study"
    )

    got = dcmread(BytesIO(requests.get(f"{READING}/instances/{found[0]}/file", timeout=30).content))
    # match the original by Instance Number (kept by the profile)
    original = next(
        dcmread(p)
        for p in study.paths
        if int(dcmread(p, stop_before_pixels=True).InstanceNumber) == int(got.InstanceNumber)
    )
    before, after = flatten(original), flatten(got)
    removed = sorted(k for k in before if k not in after)
    replaced = sorted(k for k in before if k in after and before[k][1] != after[k][1])
    added = sorted(k for k in after if k not in before)
    print(
        f"\n   In instance #{got.InstanceNumber}: {len(removed)} attributes removed, "
        f"{len(replaced)} replaced, {len(added)} added (markers), "
        f"{len(before) - len(removed) - len(replaced)} kept unchanged; pixel data "
        f"{'identical' if got.PixelData == original.PixelData else 'CHANGED'}.\n"
    )
    print(f"   {'attribute':44} {'original (synthetic)':34} -> de-identified")
    for k in replaced:
        print(f"   {before[k][0][:44]:44} {before[k][1][:34]:34} -> {after[k][1]}")
    for k in removed:
        print(f"   {before[k][0][:44]:44} {before[k][1][:34]:34} -> (removed)")
    for k in added:
        print(f"   {after[k][0][:44]:44} {'':34} -> {after[k][1]}")
    text = "\n".join(v for _, v in after.values()).lower()
    leaked = [p for p in study.identity if p.lower() in text]
    print(
        f"\n   Planted identifying values found in the de-identified instance: "
        f"{len(leaked)} of {len(study.identity)} (the reading profile keeps the time of day and "
        "descriptions once cleaned)"
    )

    print("\n6. The reading hub takes the case from the bridge's worklist (UPS-RS)")
    workitem = claim_workitem(auth, pseudo_study)
    print("   The subspecialist's findings come back (POST /api/v1/cases/{id}/findings)")
    key = requests.get(f"{READING}/instances/{found[0]}/simplified-tags", timeout=30).json()
    body = {
        "reader": {"name": "Ana Lee", "organization": "Neuro Reading Group"},
        "status": "final",
        "findings": "8 mm enhancing lesion in the left frontal lobe.",
        "impression": "Findings favour a low-grade glioma.",
        "recommendations": "MR spectroscopy; neurosurgical review.",
        "agreement": "minor_discrepancy",
        "patient_summary": (
            "A small spot was seen in the front of the brain. It is most likely a slow-growing "
            "tumour. More scans and a visit to a brain surgeon are advised."
        ),
        "key_images": [{"sop_instance_uid": key["SOPInstanceUID"], "note": "lesion"}],
        "signed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    r = requests.post(
        f"{BRIDGE}/api/v1/cases/{case['id']}/findings", json=body, headers=auth, timeout=60
    )
    r.raise_for_status()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        case = requests.get(f"{BRIDGE}/api/v1/cases/{case['id']}", headers=auth, timeout=10).json()
        if case["state"] == "returned":
            break
        time.sleep(0.5)
    print(f"   case {case['id']}: {case['state']}")
    if workitem:
        complete_workitem(auth, *workitem)
    sr_uid = case["reports"][0]["sop_instance_uid"]
    hit = requests.post(
        f"{HOSPITAL}/tools/find",
        timeout=30,
        json={"Level": "Instance", "Query": {"SOPInstanceUID": sr_uid}, "Expand": True},
    ).json()
    if hit:
        tags = requests.get(
            f"{HOSPITAL}/instances/{hit[0]['ID']}/simplified-tags", timeout=30
        ).json()
        print(
            f"   In the hospital PACS: {UID(tags.get('SOPClassUID', '')).name} "
            f'"{tags.get("SeriesDescription")}" in the ORIGINAL study '
            f"{tags.get('StudyInstanceUID')}"
        )
        print(
            f"   patient {tags.get('PatientName')} / {tags.get('PatientID')} "
            f"(re-identified from the vault), verification {tags.get('VerificationFlag')}"
        )

    show_ehr(Path(args.work) / "ehr")

    print("\nLook for yourself:")
    print(f"   hospital PACS:    {HOSPITAL}/app/explorer.html")
    study_id = studies[0] if studies else ""
    print(f"   reading archive:  {READING}/app/explorer.html#study?uuid={study_id}")
    print(
        f"   bridge case:      curl -H 'Authorization: Bearer {args.token}' "
        f"{BRIDGE}/api/v1/cases/{case['id']}"
    )
    print(f"   bridge metrics:   {BRIDGE}/metrics    health: {BRIDGE}/healthz")
    print("   logs:             var/demo/*.log")
    print("\nThe services keep running; `make stop` ends them.")
    return 0 if not leaked else 1


if __name__ == "__main__":
    sys.exit(main())
