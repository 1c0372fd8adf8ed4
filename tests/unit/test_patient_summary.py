"""A report a patient can follow (issue #18): the summary for the patient, first in the PDF (read
as text with pdftotext and looked at as a picture with pdftoppm), in its own SR section, and
first in the ORU; the agreement in plain words; a summary over the limit refused by name."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError
from pydicom.dataset import Dataset

from bridge.findings.oru import Endpoints, build_oru, texts, validate
from bridge.findings.pdf import render_pdf
from bridge.findings.schema import MAX_SUMMARY, Findings

SUMMARY = (
    "A small spot was seen in the front of the brain. It is most likely a slow-growing tumour. "
    "More scans and a visit to a brain surgeon are advised."
)


def findings(**extra: object) -> Findings:
    return Findings.model_validate(
        {
            "reader": {"name": "Ana Lee", "organization": "Neuro Reading Group"},
            "status": "final",
            "findings": "8 mm enhancing lesion in the left frontal lobe.",
            "impression": "Findings favour a low-grade glioma.",
            "recommendations": "MR spectroscopy; neurosurgical review.",
            "agreement": "major_discrepancy",
            "signed_at": "2026-11-28T10:15:00Z",
            "patient_summary": SUMMARY,
            **extra,
        }
    )


def test_a_summary_over_the_limit_is_refused_by_name() -> None:
    with pytest.raises(ValidationError) as exc:
        findings(patient_summary="x" * (MAX_SUMMARY + 1))
    assert exc.value.errors()[0]["loc"] == ("patient_summary",)
    assert findings(patient_summary="").patient_summary == ""  # optional


#: BRIDGE_TEST_SCREENSHOTS=docs: the example PDF and its picture are written to docs/ (the
#: README shows them), else to the test's own temporary folder.
DOCS = Path(__file__).parents[2] / "docs"


@pytest.fixture
def pdf(tmp_path: Path) -> Path:
    path = tmp_path / "report.pdf"
    path.write_bytes(render_pdf(findings(), "Second opinion report"))
    if os.environ.get("BRIDGE_TEST_SCREENSHOTS") == "docs":
        shutil.copy(path, DOCS / "example-report.pdf")
    return path


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is required: run `make test` (it installs poppler-utils)")


def test_the_pdf_opens_with_the_summary_in_plain_words(pdf: Path) -> None:
    _need("pdftotext")
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    flat = " ".join(text.split())
    order = [
        flat.index("Summary for the patient"),
        flat.index("differs from the original report in an important point"),
        flat.index("please discuss it with your doctor"),
        flat.index("slow-growing tumour"),
        flat.index("Findings"),
        flat.index("Major discrepancy with the original report"),
    ]
    assert order == sorted(order), flat


def test_the_pdf_looks_like_a_report_with_the_summary_on_top(pdf: Path, tmp_path: Path) -> None:
    """Rendered to a picture: a page of dark text on white, the tinted summary box in its upper
    part, above the technical sections."""
    _need("pdftoppm")
    subprocess.run(["pdftoppm", "-r", "50", "-png", str(pdf), str(tmp_path / "page")], check=True)
    (png,) = sorted(tmp_path.glob("page*.png"))
    if os.environ.get("BRIDGE_TEST_SCREENSHOTS") == "docs":
        subprocess.run(
            ["pdftoppm", "-r", "80", "-png", "-singlefile", str(pdf), str(DOCS / "example-report")],
            check=True,
        )
    page = np.asarray(Image.open(png).convert("RGB")).astype(int)
    rows = page.shape[0]
    tint = (abs(page[..., 0] - 235) <= 3) & (abs(page[..., 1] - 242) <= 3) & (page[..., 2] >= 247)
    tinted_rows = np.nonzero(tint.mean(axis=1) > 0.5)[0]
    assert tinted_rows.size > 0, "no summary box on the page"
    assert tinted_rows.max() < rows * 0.4  # near the top
    dark = (page.sum(axis=2) < 200).any(axis=1)
    assert dark[tinted_rows.max() + 1 :].sum() > 10  # text follows below the box
    assert (page.sum(axis=2) > 700).mean() > 0.7  # mostly white paper


def test_the_sr_and_the_oru_carry_the_summary_first() -> None:
    from bridge.findings.sr import SectionCodes, build_content

    root = build_content(findings(), [], SectionCodes.DCM)
    sections = [i for i in root.ContentSequence if i.ValueType == "CONTAINER"]
    assert sections[0].ConceptNameCodeSequence[0].CodeValue == "121111"
    summary = [i.TextValue for i in sections[0].ContentSequence]
    assert summary[0] == SUMMARY and "please discuss it with your doctor" in summary[1]
    sr = Dataset()
    sr.ContentSequence = root.ContentSequence
    sr.SOPInstanceUID = "2.25.1"
    sr.SeriesInstanceUID = "2.25.2"
    assert texts(sr)["summary"] == summary
    original = Dataset()
    original.PatientID = "P1"
    original.PatientName = "Doe^Jane"
    original.StudyInstanceUID = "2.25.3"
    er7 = build_oru(sr, original, "final", Endpoints("SO", "H", "RIS", "H"), datetime.now(UTC))
    assert validate(er7) == ""
    obx = [s.split("|") for s in er7.split("\r") if s.startswith("OBX")]
    assert obx[0][3].startswith("SUMMARY^") and obx[0][5].split("~")[0] == SUMMARY


def test_without_a_summary_nothing_changes() -> None:
    from bridge.findings.sr import SectionCodes, build_content

    root = build_content(findings(patient_summary=""), [], SectionCodes.DCM)
    codes = [
        i.ConceptNameCodeSequence[0].CodeValue
        for i in root.ContentSequence
        if i.ValueType == "CONTAINER"
    ]
    assert codes == ["121070", "121072", "121074"]
