"""The web console in real headless Chromium (Debian's, driven by Playwright): sign in, follow a
case through its states, act on quarantined instances, submit a study from the PACS; roles and
CSRF. Screenshots of the main pages land in docs/."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import requests

from bridge.sample import make_burned_in, make_study
from bridge.store.vault_crypto import new_key
from conftest import ROOT, bridge_env
from tests.helpers import add_user
from tests.support.peers import BridgeProcess, storescu

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
#: Where the screenshots go: docs/ when BRIDGE_TEST_SCREENSHOTS=docs (to refresh the README's
#: pictures), else the test's own temporary folder.
SHOTS = os.environ.get("BRIDGE_TEST_SCREENSHOTS", "")
PASSWORDS = {
    "ada": "ada-admin-pass-123",
    "sam": "sam-submit-pass-123",
    "vic": "vic-viewer-pass-123",
}


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.fail("Debian's chromium is required: run `make test` (it installs it)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def _add_users(bridge: BridgeProcess) -> None:
    for name, role in (("ada", "admin"), ("sam", "submitter"), ("vic", "viewer")):
        add_user(bridge, name, PASSWORDS[name], role)


def _sign_in(page, bridge: BridgeProcess, name: str) -> None:
    page.goto(f"{bridge.url}/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORDS[name])
    page.click("button[type=submit]")
    page.wait_for_url(f"{bridge.url}/cases")


def _reload_until(page, text: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while text not in page.content():
        assert time.monotonic() < deadline, f"{text!r} never appeared"
        time.sleep(0.5)
        page.reload()


@pytest.mark.slow(80)
def test_console_end_to_end(tmp_path, browser, hospital, reading, webhook, make_bridge):
    shots = ROOT / SHOTS if SHOTS else tmp_path
    bridge = make_bridge(
        bridge_env(
            reading,
            webhook,
            BRIDGE_HTTP__SECURE_COOKIES="false",
            BRIDGE_DEID__PIXELS__MODALITIES='{"US": "hold"}',
            BRIDGE_PACS__DICOMWEB_URL=hospital.dicomweb,
            BRIDGE_VAULT__KEYS=json.dumps([new_key()]),
        )
    )
    _add_users(bridge)
    ctx = browser.new_context(viewport={"width": 1360, "height": 900})
    page = ctx.new_page()

    # Not signed in: sent to the sign-in page; a wrong password is refused.
    page.goto(f"{bridge.url}/cases")
    assert "/login" in page.url
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    page.wait_for_load_state()  # the answer to the POST, loaded
    assert "Wrong user name or password" in page.content()
    _sign_in(page, bridge, "ada")
    cookie = next(c for c in ctx.cookies() if c["name"] == "so_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # A study arrives: the case moves through its states on its page.
    study = make_study(tmp_path / "ct", 4, rows=64, columns=64, accession="ACC-CONSOLE")
    storescu(bridge.dimse_port, study.paths)
    page.goto(f"{bridge.url}/cases")
    # (acknowledged instances reach the state store moments after their Success: wait for
    # the case's own row, not for a word the page may show anyway)
    deadline = time.monotonic() + 90
    while not (cases := bridge.api("/cases")):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    _reload_until(page, cases[0]["id"])
    case = bridge.wait_forwarded(4)
    _reload_until(page, "forwarded")
    page.click(f"text={case['id']}")
    assert "PLANTEDFAMILY" not in page.inner_text("pre.manifest")
    assert page.inner_text("#case-state") == "forwarded"
    assert page.inner_text("#workitem").startswith("SCHEDULED")  # in the reading worklist

    # Findings come back; the study is not in the PACS yet, so the report is held. The admin
    # stores the study into the PACS and retries the report from the quarantine page.
    auth = {"Authorization": f"Bearer {bridge.token}"}
    findings = {
        "reader": {"name": "Lee^Ana", "organization": "Neuro Reading Group"},
        "status": "final",
        "findings": "8 mm enhancing lesion in the left frontal lobe.",
        "impression": "Findings favour a low-grade glioma.",
        "signed_at": "2026-11-28T10:15:00Z",
    }
    r = requests.post(
        f"{bridge.url}/api/v1/cases/{case['id']}/findings", json=findings, headers=auth, timeout=30
    )
    assert r.status_code in (200, 201, 202), r.text
    page.goto(f"{bridge.url}/quarantine")
    _reload_until(page, "not in the PACS")
    for p in study.paths:
        requests.post(f"{hospital.url}/instances", data=p.read_bytes(), timeout=30)
    page.click("tr[id^=report-] >> text=Retry")
    page.wait_for_load_state()  # the answer to the POST, loaded
    assert "Done: report-retry" in page.content()
    page.goto(f"{bridge.url}/cases/{case['id']}")
    _reload_until(page, '<span class="badge state-returned" id="case-state">returned</span>')
    assert "8 mm enhancing lesion in the left frontal lobe." in page.inner_text("div.sr")
    assert "Findings favour a low-grade glioma." in page.inner_text("div.sr")
    # Final findings that came without a claim complete the case's worklist item.
    assert page.inner_text("#workitem").startswith("COMPLETED")
    page.screenshot(path=str(shots / "console-case.png"), full_page=True)
    # ... and the audit trail of that case, exported as DICOM Audit Messages.
    from xml.etree import ElementTree as ET

    r = requests.get(
        f"{bridge.url}/api/v1/audit?case_id={case['id']}&format=dicom", headers=auth, timeout=30
    )
    codes = [
        m.find("EventIdentification/EventID").get("csd-code") for m in ET.fromstring(r.content)
    ]
    assert "110104" in codes and "110103" in codes  # transferred (forwarded, returned), accessed

    # Two ultrasound images held for possible burned-in text: one released, one discarded.
    us1, us2 = tmp_path / "us1.dcm", tmp_path / "us2.dcm"
    make_burned_in(us1, ["PORTABLE", "SUPINE"], seed=5)
    make_burned_in(us2, ["LEFT KIDNEY"], seed=6)
    storescu(bridge.dimse_port, [us1, us2])
    page.goto(f"{bridge.url}/quarantine")
    _reload_until(page, "possible burned-in text")
    deadline = time.monotonic() + 60
    while page.locator("table.held >> nth=0 >> tbody tr[id^=instance-]").count() < 2:
        assert time.monotonic() < deadline
        time.sleep(0.5)
        page.reload()
    page.screenshot(path=str(shots / "console-quarantine.png"), full_page=True)
    rows = page.locator("tbody tr[id^=instance-]")
    first = rows.nth(0).get_attribute("id")
    page.click(f"#{first} >> text=Release")
    page.wait_for_load_state()  # the answer to the POST, loaded
    assert "Done: release" in page.content()
    second = page.locator("tbody tr[id^=instance-]").nth(0).get_attribute("id")
    page.click(f"#{second} >> text=Discard")
    page.wait_for_load_state()  # the answer to the POST, loaded
    assert "Done: discard" in page.content() and "Nothing held." in page.content()
    released = bridge.wait_case(
        lambda c: (
            c["state"] == "forwarded"
            and c["instances"]["forwarded"] == 1
            and "US" in c["modalities"]
        )
    )
    assert released["instances"]["quarantined"] == 0

    # Submit a study from the PACS.
    pulled = make_study(tmp_path / "pacs", 3, rows=64, columns=64, accession="ACC-CONSOLE-P")
    for p in pulled.paths:
        requests.post(f"{hospital.url}/instances", data=p.read_bytes(), timeout=30)
    page.goto(f"{bridge.url}/submit?accession=ACC-CONSOLE-P")
    assert "PID-7734521" in page.content()  # the PACS's answer, for the hospital's user
    page.fill("form.send textarea[name=question]", "Is this lesion new?")
    page.select_option("form.send select[name=subspecialty]", "oncology")
    page.screenshot(path=str(shots / "console-submit.png"), full_page=True)
    page.click("form.send button[type=submit]")
    page.wait_for_load_state()  # the answer to the POST, loaded
    page.wait_for_url(f"{bridge.url}/cases/*")
    _reload_until(page, '<span class="badge state-forwarded" id="case-state">forwarded</span>')
    assert "Is this lesion new?" in page.content()

    # Or upload a patient's ZIP (streamed to disk), one case per study.
    import zipfile

    disc = make_study(tmp_path / "disc", 2, rows=64, columns=64, accession="ACC-CONSOLE-Z")
    archive = tmp_path / "patient.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in disc.paths:
            zf.write(p, f"DICOM/{p.name}")
        zf.writestr("autorun.inf", "[autorun]")
    page.goto(f"{bridge.url}/submit")
    page.set_input_files("form.upload input[name=archive]", str(archive))
    page.fill("form.upload textarea[name=question]", "Outside CT: do you agree?")
    page.click("form.upload button[type=submit]")
    page.wait_for_load_state()  # the answer to the POST, loaded
    assert "Upload imported: 1 file(s) not DICOM skipped" in page.content()
    page.click("div.notice a[href^='/cases/']")
    _reload_until(page, '<span class="badge state-forwarded" id="case-state">forwarded</span>')
    assert "Outside CT: do you agree?" in page.content()
    page.goto(f"{bridge.url}/cases")
    page.screenshot(path=str(shots / "console-cases.png"), full_page=True)

    # Turnaround: the cases of this test by subspecialty and priority, none past due.
    page.goto(f"{bridge.url}/turnaround")
    table = page.inner_text("table.turnaround")
    assert "Arrival → forwarded" in table and "Forwarded → report" in table
    assert "routine" in table and "No case" not in table

    # The audit trail names who did what.
    page.goto(f"{bridge.url}/audit")
    text = page.inner_text("table.audit")
    for action in (
        "sign-in",
        "case.viewed",
        "instance.release",
        "instance.discard",
        "case.submitted",
        "case.imported",
    ):
        assert action in text, action
    ctx.close()

    # A viewer reads but may not act; a form without its CSRF token is refused.
    viewer = browser.new_context()
    vpage = viewer.new_page()
    _sign_in(vpage, bridge, "vic")
    assert "Submit" not in vpage.inner_text("header nav")
    jar = {c["name"]: c["value"] for c in viewer.cookies()}
    r = requests.post(
        f"{bridge.url}/quarantine/instances/1/retry", cookies=jar, timeout=30, allow_redirects=False
    )
    assert r.status_code == 403
    r = requests.get(f"{bridge.url}/submit", cookies=jar, timeout=30)
    assert r.status_code == 403
    viewer.close()
    admin = browser.new_context()
    apage = admin.new_page()
    _sign_in(apage, bridge, "ada")
    jar = {c["name"]: c["value"] for c in admin.cookies()}
    r = requests.post(
        f"{bridge.url}/quarantine/instances/1/retry", cookies=jar, timeout=30, allow_redirects=False
    )
    assert r.status_code == 403 and "form expired" in r.text
    admin.close()
    log = bridge.log()
    for value in study.identity:
        assert value not in log, value
    # The vault is encrypted at rest: the state store's files hold no planted identity.
    raw = b"".join(p.read_bytes() for p in (bridge.workdir / "data").glob("bridge.sqlite3*"))
    for value in ("PLANTEDFAMILY", "PLANTEDGIVEN", "PID-7734521", "PLANTED-ISSUER-HOSP"):
        assert value.encode() not in raw, value
