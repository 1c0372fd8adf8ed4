"""The burned-in text scan's cost (issue #14), in one run beside its references:

1. end to end, a 200-slice CT study (storescu -> bridge -> reading Orthanc, every slice scanned by
   the default policy) against storescu straight into the reading Orthanc ("direct");
2. de-identification with the scan in process, CT slices per second, on one and on two threads
   (the pipeline's ``worker.deid_threads`` default), with the pre-filter and without it.

Writes docs/bench-scan.md. Part of ``make bench``; alone: ``make bench-scan``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest  # noqa: E402
from ingest import SECRET  # noqa: E402
from run import fmt, via_bridge  # noqa: E402

from bridge.sample import make_study  # noqa: E402


def deid_rate(files: list[Path], threads: int, prefilter: bool) -> float:
    os.environ.setdefault("BRIDGE_DEID__SECRET", SECRET)
    from bridge.config import Settings
    from bridge.deid.build import make_deidentifier

    settings = Settings(deid={"pixels": {"default": "mask", "prefilter": prefilter}})  # type: ignore[arg-type]
    engine = make_deidentifier(settings.deid)
    engine.deidentify_file(files[0])  # models loaded outside the timing
    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(engine.deidentify_file, files))
    return len(files) / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("docs/bench-scan.md"))
    args = ap.parse_args()
    n, runs = args.instances, args.runs
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp:
        root = Path(tmp)
        study = make_study(root / "ct", n, seed=42)
        direct = [ingest.orthanc(root / f"d{i}", study.paths) for i in range(runs)]
        scanned = [
            via_bridge(
                root / f"e{i}",
                study.paths,
                study.study_uid,
                {"BRIDGE_DEID__PIXELS__DEFAULT": "mask"},
            )[1]
            for i in range(runs)
        ]
        header = via_bridge(
            root / "header",
            study.paths,
            study.study_uid,
            {"BRIDGE_DEID__PIXELS__DEFAULT": "pass"},
        )[1]
        full = via_bridge(
            root / "full",
            study.paths,
            study.study_uid,
            {"BRIDGE_DEID__PIXELS__DEFAULT": "mask", "BRIDGE_DEID__PIXELS__PREFILTER": "false"},
        )[1]
        rates = {
            (threads, pre): [deid_rate(study.paths, threads, pre) for _ in range(runs)]
            for threads in (1, 2)
            for pre in (True, False)
        }
    d, e = statistics.median(direct), statistics.median(scanned)
    lines = [
        "# The burned-in text scan: cost",
        "",
        f"`make bench-scan` (bench/scan.py, also run by `make bench`), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, this {os.cpu_count()}-core "
        f"machine, {n} generated CT slices (512 x 512, 16-bit, no burned-in text: what most CT "
        "is). Medians of the runs listed.",
        "",
        "## End to end (storescu until the reading archive holds every instance)",
        "",
        "| path | seconds (median) | runs | ratio to direct | target |",
        "|---|---:|---|---:|---|",
        f"| direct: storescu -> reading Orthanc | {d:.2f} | {fmt(direct)} | 1.00 | |",
        f"| bridge, default policy (every slice scanned, pre-filter on) | {e:.2f} | "
        f"{fmt(scanned)} | {e / d:.2f} | <= 3x |",
        f"| bridge, every slice through the full detector (pre-filter off) | {full:.2f} | "
        f"1 run | {full / d:.2f} | |",
        f"| bridge, header path only (pixels not scanned: policy pass) | {header:.2f} | "
        f"1 run | {header / d:.2f} | |",
        "",
        "## De-identification with the scan, in process",
        "",
        "| threads | pre-filter | CT slices/s (median) | runs | target |",
        "|---:|---|---:|---|---|",
    ]
    for (threads, pre), values in rates.items():
        target = ">= 30" if threads == 2 and pre else ""
        lines.append(
            f"| {threads} | {'on' if pre else 'off'} | {statistics.median(values):.1f} | "
            f"{fmt(values)} | {target} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
