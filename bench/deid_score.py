"""``make deid-score``: the de-identification engine on the shared corpora, both scored.

For each corpus (``../shared/corpus/pseudo-phi``, the set the detector was tuned on, and
``../shared/corpus/pseudo-phi-validation``, patients it never saw): every instance through the
same engine as the pipeline (default settings, two processes), then

- header leaks (``bridge.deid.score``), and burned-in text under both measures of
  ``bridge.deid.pixels.score`` (the stricter one is gated), false masking, instances forwarded;
- the pre-filter's recall: of the frames where the full scan finds text, how many the cheap first
  look passes on (it must be all of them), and the ground-truth boxes the full scan masks that
  the pre-filter would have lost;
- crops of every box the stricter measure counts as not masked, saved for a person to look at
  (original left, output right, the ground-truth box in yellow) under ``--crops``.

Writes a markdown table (``--out``, default docs/deid-score.md) and exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread

os.environ.setdefault("BRIDGE_DEID__SECRET", "deid-score-secret-0123456789")

ROOT = Path(__file__).resolve().parents[1]
CORPORA = {
    "pseudo-phi (tuned on)": ROOT.parent / "shared" / "corpus" / "pseudo-phi",
    "pseudo-phi-validation (never seen)": ROOT.parent
    / "shared"
    / "corpus"
    / "pseudo-phi-validation",
}

_engine: Any = None


def _init() -> None:
    global _engine
    from bridge.config import Settings
    from bridge.deid.build import make_deidentifier

    _engine = make_deidentifier(Settings().deid)


def _one(path: str) -> tuple[str, bytes | None, str, float, dict[str, int]]:
    """De-identify one file; also the pre-filter's verdict on each frame the full scan read."""
    from bridge.deid.engine import write_result
    from bridge.domain.errors import DeidError

    t = time.process_time()
    try:
        res = _engine.deidentify_file(Path(path))
    except DeidError as exc:
        return path, None, exc.message, time.process_time() - t, {}
    cpu = time.process_time() - t
    buf = io.BytesIO()
    write_result(res, buf)
    return path, buf.getvalue(), "", cpu, _prefilter_check(path)


def _prefilter_check(path: str) -> dict[str, int]:
    """Frames the full scan (no pre-filter) finds text in, and how many the pre-filter passes."""
    from bridge.deid.pixels import frames as px

    cleaner = _engine.pixels
    ds = dcmread(path)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    out = {"frames": 0, "with_text": 0, "passed": 0, "lost_frames": 0}
    saved = cleaner.prefilter
    try:
        for frame in px.decode(ds):
            view = px.view8(frame, photometric)
            out["frames"] += 1
            cleaner.prefilter = None
            full = cleaner._scan(view).boxes
            if full:
                out["with_text"] += 1
                if saved is not None and saved.candidate(view):
                    out["passed"] += 1
                else:
                    out["lost_frames"] += 1
    finally:
        cleaner.prefilter = saved
    return out


def _crop(orig: Any, out: Any, box: tuple[int, int, int, int], dest: Path) -> None:
    from PIL import Image, ImageDraw

    from bridge.deid.pixels import frames as px

    photometric = str(orig.get("PhotometricInterpretation", "MONOCHROME2"))
    a = px.view8(px.decode(orig)[0], photometric)
    b = px.view8(px.decode(out)[0], str(out.get("PhotometricInterpretation", photometric)))
    x0, y0, x1, y1 = box
    h = max(4, y1 - y0)
    r0, r1 = max(0, y0 - 3 * h), min(a.shape[0], y1 + 3 * h)
    c0, c1 = max(0, x0 - 6 * h), min(a.shape[1], x1 + 6 * h)
    scale = max(1, int(160 / max(1, r1 - r0)))
    tiles = []
    for img in (a, b):
        tile = Image.fromarray(img[r0:r1, c0:c1]).convert("RGB")
        tile = tile.resize((tile.width * scale, tile.height * scale), Image.Resampling.NEAREST)
        ImageDraw.Draw(tile).rectangle(
            [(x0 - c0) * scale, (y0 - r0) * scale, (x1 - c0) * scale, (y1 - r0) * scale],
            outline=(255, 255, 0),
        )
        tiles.append(tile)
    both = Image.new("RGB", (tiles[0].width * 2 + 8, tiles[0].height), (255, 0, 255))
    both.paste(tiles[0], (0, 0))
    both.paste(tiles[1], (tiles[0].width + 8, 0))
    both.save(dest)


def score_corpus(name: str, folder: Path, crops: Path | None) -> dict[str, Any]:
    from bridge.deid.pixels.score import PixelScore, ground_truth, score_pair
    from bridge.deid.score import score

    files = sorted(str(p) for p in folder.glob("*.dcm"))
    t = time.monotonic()
    with Pool(2, initializer=_init) as pool:
        results = pool.map(_one, files, chunksize=1)
    wall = time.monotonic() - t
    pixels = PixelScore()
    pairs = []
    pre = {"frames": 0, "with_text": 0, "passed": 0, "lost_frames": 0}
    outputs: list[Any] = []
    for path, data, _held, _cpu, check in results:
        orig = dcmread(path)
        out = dcmread(io.BytesIO(data)) if data is not None else None
        outputs.append((orig, out))
        if out is not None:
            pairs.append((orig, out))
        score_pair(orig, out, ground_truth(Path(path).with_suffix(".json")), pixels)
        for k in pre:
            pre[k] += check.get(k, 0)
    header = score(pairs)
    if crops is not None:
        folder_out = crops / folder.name
        shutil.rmtree(folder_out, ignore_errors=True)
        folder_out.mkdir(parents=True, exist_ok=True)
        for i, box in pixels.missed_strict:
            orig, out = outputs[i]
            stem = Path(files[i]).stem[-40:]
            _crop(orig, out, box, folder_out / f"{stem}_{box[0]}_{box[1]}.png")
    cpu = sum(r[3] for r in results)
    return {
        "name": name,
        "pixels": pixels,
        "header": header,
        "prefilter": pre,
        "wall": wall,
        "cpu": cpu,
        "instances": len(files),
    }


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "deid-score.md")
    ap.add_argument("--crops", type=Path, default=ROOT / "var" / "deid-score" / "crops")
    args = ap.parse_args()
    from bridge.deid.pixels.score import TARGETS

    rows = []
    for name, folder in CORPORA.items():
        if not folder.is_dir():
            print(f"{name}: {folder} is absent, skipped")
            continue
        rows.append(score_corpus(name, folder, args.crops))
        r = rows[-1]
        print(f"== {name}: {r['instances']} instances")
        print(r["header"].report())
        print(r["pixels"].report())
    if not rows:
        print("no corpus found beside the project (../shared/corpus)")
        return 0
    head = "| measure | target | " + " | ".join(r["name"] for r in rows) + " |"
    lines = [
        "# Burned-in text and headers on the shared corpora",
        "",
        f"`make deid-score` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, this "
        f"{os.cpu_count()}-core machine, default settings). Crops of every box the stricter "
        f"measure counts as not masked: `{_shown(args.crops)}`.",
        "",
        head,
        "|---|---|" + "---|" * len(rows),
    ]

    def row(label: str, target: str, cells: list[str]) -> None:
        lines.append(f"| {label} | {target} | " + " | ".join(cells) + " |")

    def pct(n: int, d: int) -> str:
        return f"{n} / {d} = {n / d:.1%}" if d else "-"

    ok = True
    strict = [r["pixels"].rates["boxes masked (strict)"] for r in rows]
    ok &= all(v >= TARGETS["boxes masked (strict)"] for v in strict)
    row(
        "legible boxes masked, stricter measure",
        ">= 97 %",
        [pct(r["pixels"].masked_strict, r["pixels"].boxes) for r in rows],
    )
    row(
        "legible boxes masked, ink measure",
        "",
        [pct(r["pixels"].masked, r["pixels"].boxes) for r in rows],
    )
    fm = [r["pixels"].rates["false masking"] for r in rows]
    ok &= all(v <= TARGETS["false masking"] for v in fm)
    row("false masking outside the boxes", "<= 2 %", [f"{v:.2%}" for v in fm])
    row(
        "false masking away from the text",
        "",
        [f"{float(np.mean(r['pixels'].false_area_far or [0])):.2%}" for r in rows],
    )
    fw = [r["pixels"].rates["instances forwarded"] for r in rows]
    ok &= all(v >= TARGETS["instances forwarded"] for v in fw)
    row(
        "instances forwarded",
        ">= 95 %",
        [pct(r["pixels"].forwarded, r["pixels"].instances) for r in rows],
    )
    leaks = [r["header"].header_leaks for r in rows]
    ok &= all(v == 0 for v in leaks) and all(r["header"].clean for r in rows)
    row("header leaks", "0", [str(v) for v in leaks])
    row(
        "pre-filter recall (frames with text passed on)",
        "100 %",
        [pct(r["prefilter"]["passed"], r["prefilter"]["with_text"]) for r in rows],
    )
    ok &= all(r["prefilter"]["lost_frames"] == 0 for r in rows)
    row(
        "CPU seconds per instance (de-identification, mean)",
        "",
        [f"{r['cpu'] / max(1, r['instances']):.2f}" for r in rows],
    )
    lines += ["", f"verdict: {'PASS' if ok else 'FAIL'}", ""]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
