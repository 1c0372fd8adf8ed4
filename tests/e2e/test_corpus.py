"""The 71 real instances of ../shared/corpus/pseudo-phi through the bridge: header identities
and burned-in text, scored on what the reading archive received."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from bridge.deid.engine import masked_instance_uid
from bridge.deid.pixels.score import TARGETS, PixelScore, ground_truth, score_pair
from bridge.deid.pseudonyms import Pseudonymizer
from bridge.deid.score import score
from bridge.testing.peers import acknowledged, storescu
from conftest import CORPUS, DEID_SECRET, bridge_env
from tests.e2e.conftest import study_instances
from tests.helpers import leaks

pytestmark = pytest.mark.e2e


def identifying_values(path: Path) -> list[str]:
    """What identifies the patient in this file: ground truth plus the header's own values."""
    values: list[str] = []
    truth = json.loads(path.with_suffix(".json").read_text())
    for ann in truth.get("annotation", []):
        text = ann["value"]["text"]
        if any(ch.isdigit() for ch in text) and not text.replace(" ", "").isdigit():
            continue  # dates and ages in display formats: checked via the header's DA values
        values += [t for t in text.replace(",", " ").split() if len(t) >= 4]
    ds = dcmread(path, stop_before_pixels=True)

    def visit(d):
        for elem in d:
            if elem.VR == "SQ":
                for item in elem.value:
                    visit(item)
            elif elem.VR == "PN" and elem.value:
                for comp in str(elem.value).replace("=", "^").split("^"):
                    values.extend(t for t in comp.split() if len(t) >= 4)
            elif (
                elem.VR == "DA"
                and elem.value
                and len(str(elem.value)) == 8
                or elem.keyword
                in (
                    "PatientID",
                    "AccessionNumber",
                    "OtherPatientIDs",
                    "InstitutionName",
                    "InstitutionAddress",
                    "PatientAddress",
                    "StudyID",
                )
                and elem.value
            ):
                values.append(str(elem.value))

    visit(ds)
    values += [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
    return sorted({v.strip() for v in values if v and v.strip()})


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus/pseudo-phi is absent")
def test_shared_corpus_headers_leak_nothing(tmp_path, reading, make_bridge):
    files = sorted(CORPUS.glob("*.dcm"))
    assert len(files) == 71
    bridge = make_bridge(bridge_env(reading, None))
    out = storescu(bridge.dimse_port, files)
    assert len(acknowledged(out.stdout)) == 71

    studies = {str(dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files}
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        cases = [c for c in bridge.api("/cases") if c["original_study_instance_uid"] in studies]
        if len(cases) == len(studies) and all(c["state"] == "forwarded" for c in cases):
            break
        time.sleep(0.5)
    assert sum(c["instances"]["forwarded"] for c in cases) == 71, cases

    pseudo = Pseudonymizer(DEID_SECRET.encode())
    by_sop = {}
    for c in cases:
        for ds in study_instances(reading, c["pseudonymized_study_instance_uid"]):
            by_sop[str(ds.SOPInstanceUID)] = ds
    assert len(by_sop) == 71
    problems = {}
    pairs = []
    pixels = PixelScore()
    for f in files:
        src = dcmread(f)
        sop = str(src.SOPInstanceUID)
        out_ds = by_sop.get(pseudo.uid(sop)) or by_sop[masked_instance_uid(pseudo, sop)]
        pairs.append((src, out_ds))
        values = identifying_values(f)
        assert len(leaks(src, values)) >= 5, "the check must see the identity in the original"
        found = leaks(out_ds, values)
        if found:
            problems[f.name] = found
        assert out_ds.PatientIdentityRemoved == "YES"
        score_pair(src, out_ds, ground_truth(f.with_suffix(".json")), pixels)
    assert problems == {}
    # The project's own header scorer agrees: zero leaks, UIDs changed and consistent.
    header = score(pairs)
    assert header.clean, header.report()
    # Burned-in text, scored on what the reading archive received.
    print(pixels.report())
    rates = pixels.rates
    assert rates["instances forwarded"] >= TARGETS["instances forwarded"], pixels.report()
    assert rates["boxes masked"] >= TARGETS["boxes masked"], pixels.report()
    assert rates["false masking"] <= TARGETS["false masking"], pixels.report()
