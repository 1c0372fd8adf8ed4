"""End-to-end wall time: storescu -> bridge -> reading Orthanc, next to storescu -> reading Orthanc.

Same generated CT study (N x 512x512x16-bit, ~512 KB each), same machine, fresh Orthancs per
run, TCP_NODELAY=1 for dcmtk and Orthanc. Prints medians and the ratio; writes docs/bench-e2e.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

from bridge.deid.pseudonyms import Pseudonymizer
from bridge.testing.orthanc import Orthanc
from bridge.testing.peers import BridgeProcess, storescu
from bridge.testing.sample import make_study

SECRET = "bench-secret-0123456789abcdef"  # noqa: S105 - a benchmark fixture


def count(o: Orthanc, study_uid: str) -> int:
    return len(
        requests.post(
            f"{o.url}/tools/find",
            timeout=60,
            json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}},
        ).json()
    )


def direct(work: Path, files: list[Path]) -> float:
    o = Orthanc("DIRECT", work / "direct", aet="DIRECT").start()
    try:
        t = time.perf_counter()
        storescu(o.dicom_port, files, aet="DIRECT")
        return time.perf_counter() - t
    finally:
        o.stop()


def via_bridge(work: Path, files: list[Path], study_uid: str) -> tuple[float, float]:
    o = Orthanc("READING", work / "reading", aet="READING").start()
    b = BridgeProcess(
        work / "bridge",
        {
            "BRIDGE_DEID__SECRET": SECRET,
            "BRIDGE_READING__DICOMWEB_URL": o.dicomweb,
            "BRIDGE_LOG_LEVEL": "info",
            "BRIDGE_WORKER__POLL_INTERVAL": "0.05",
            "BRIDGE_SPOOL__MIN_FREE_BYTES": "0",
        },
    )
    b.start()
    pseudo_study = Pseudonymizer(SECRET.encode()).uid(study_uid)
    try:
        t = time.perf_counter()
        storescu(b.dimse_port, files)
        ingest = time.perf_counter() - t
        while count(o, pseudo_study) < len(files):
            time.sleep(0.05)
        return ingest, time.perf_counter() - t
    finally:
        b.stop()
        o.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("docs/bench-e2e.md"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        study = make_study(root / "study", args.instances, seed=42)
        d_times, b_ingest, b_e2e = [], [], []
        for i in range(args.runs):
            d_times.append(direct(root / f"d{i}", study.paths))
            ingest, e2e = via_bridge(root / f"b{i}", study.paths, study.study_uid)
            b_ingest.append(ingest)
            b_e2e.append(e2e)
            print(
                f"run {i + 1}: direct {d_times[-1]:.2f} s, bridge ingest {ingest:.2f} s, "
                f"bridge end to end {e2e:.2f} s",
                flush=True,
            )
    d, bi, be = (statistics.median(x) for x in (d_times, b_ingest, b_e2e))
    cpu = os.cpu_count()
    table = (
        f"# End-to-end benchmark ({args.instances} CT instances x 512 KB, "
        f"median of {args.runs})\n\n"
        f"Measured {time.strftime('%Y-%m-%d')} on this machine ({cpu} cores) by `make bench`.\n\n"
        "| path | seconds | ratio to direct |\n|---|---:|---:|\n"
        f"| storescu -> reading Orthanc (direct) | {d:.2f} | 1.00 |\n"
        f"| storescu -> bridge, all acknowledged (ingest) | {bi:.2f} | {bi / d:.2f} |\n"
        f"| storescu -> bridge -> de-identified in reading Orthanc | {be:.2f} | {be / d:.2f} |\n"
    )
    print()
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
