"""De-identification throughput, in process, one thread (the pipeline runs one engine per thread).

- header path only (pixels policy "pass": pixel data never decoded), N generated CT instances;
- header + burned-in text scan (the default policy: every image scanned, masked where text is
  found), the same CT instances;
- the default policy on the shared pseudo-PHI corpus (real images with burned-in text: detection,
  masking, Tesseract reading of the masked regions), when ../shared is present.

Prints instances/s (median of several runs) and writes docs/bench-deid.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bridge.config import Settings
from bridge.deid.build import make_deidentifier
from bridge.sample import make_study

os.environ.setdefault("BRIDGE_DEID__SECRET", "bench-secret-0123456789abcdef")
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "pseudo-phi"


def rate(files: list[Path], **pixels: str) -> float:
    settings = Settings(deid={"pixels": pixels} if pixels else {})  # type: ignore[arg-type]
    engine = make_deidentifier(settings.deid)
    engine.deidentify_file(files[0])  # load the detector model outside the timing
    t = time.perf_counter()
    for f in files:
        try:
            engine.deidentify_file(f)
        except Exception:  # noqa: BLE001, S112 - a held instance still took its time
            continue
    return len(files) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100, help="generated CT instances")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("docs/bench-deid.md"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-deid-") as tmp:
        ct = make_study(Path(tmp) / "ct", args.n, seed=5).paths
        rows = []
        header = [rate(ct, default="pass") for _ in range(args.runs)]
        rows.append((f"{args.n} CT 512x512 (header only, pixels not decoded)", header))
        scan = [rate(ct) for _ in range(args.runs)]
        rows.append((f"{args.n} CT 512x512 (header + burned-in text scan)", scan))
        corpus = sorted(CORPUS.glob("*.dcm"))
        if corpus:
            runs = [rate(corpus) for _ in range(max(1, args.runs - 1))]
            rows.append((f"shared corpus, {len(corpus)} instances (scan, mask, OCR)", runs))
    lines = [
        "# De-identification throughput",
        "",
        "`make bench` (bench/deid.py): one engine, one thread, in process, on this machine "
        f"({os.cpu_count()} cores); median of the runs.",
        "",
        "| input | instances/s (median) | runs |",
        "|---|---|---|",
    ]
    for name, values in rows:
        runs_text = ", ".join(f"{v:.1f}" for v in values)
        lines.append(f"| {name} | {statistics.median(values):.1f} | {runs_text} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
