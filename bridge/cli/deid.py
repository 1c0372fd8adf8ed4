"""``bridge sample``, ``bridge deid`` and ``bridge deid-score``: the de-identification engine
on files, and how well it did."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bridge.cli.command import Command
from bridge.config import Settings


def _sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", type=Path)
    p.add_argument("--instances", type=int, default=20)
    p.add_argument("--size", type=int, default=512, help="rows and columns")


def _deid_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("in_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--profile", choices=["basic", "reading"], help="default: the setting")


def _score_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("originals", type=Path)
    p.add_argument("deidentified", type=Path)


def sample(args: argparse.Namespace, _settings: Settings) -> int:
    from bridge.sample import make_study

    study = make_study(args.out_dir, args.instances, rows=args.size, columns=args.size)
    print(f"wrote {len(study.paths)} instances to {args.out_dir}")
    return 0


def deid_offline(args: argparse.Namespace, settings: Settings) -> int:
    """``bridge deid IN OUT``: the same engine as the pipeline, on files, with a summary."""
    from bridge.deid.build import make_deidentifier
    from bridge.deid.engine import write_result
    from bridge.domain.errors import ConfigError, DeidError

    if not args.in_dir.is_dir():
        raise ConfigError(f"not a folder: {args.in_dir}")
    engine = make_deidentifier(settings.deid, args.profile)
    from collections import Counter

    files = sorted(p for p in args.in_dir.rglob("*") if p.is_file())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    done = removed = replaced = masked = regions = identity = 0
    frames = scanned = rejected = unsure = added = 0
    held: Counter[str] = Counter()
    not_dicom = 0
    for i, path in enumerate(files, 1):
        if sys.stderr.isatty():
            print(f"\r  {i}/{len(files)}", end="", file=sys.stderr)
        try:
            res = engine.deidentify_file(path)
            write_result(res, args.out_dir / f"{res.pseudo_sop_uid}.dcm")
        except DeidError as exc:
            if exc.message == "cannot read the spooled instance":
                not_dicom += 1
                print(f"\n  skipped (not DICOM): {path.name}", file=sys.stderr)
                continue
            held[exc.message] += 1
            print(f"\n  held: {path.name}: {exc}", file=sys.stderr)
            continue
        done += 1
        removed += res.removed
        replaced += res.replaced
        if res.pixels is not None and res.pixels.action in ("masked", "clean"):
            frames += res.pixels.frames
            scanned += res.pixels.scanned
            rejected += res.pixels.rejected
            unsure += res.pixels.unsure
            added += res.pixels.identity_added
        if res.pixels is not None and res.pixels.action == "masked":
            masked += 1
            regions += res.pixels.regions
            identity += res.pixels.identity_regions
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(
        f"profile {engine.profile.name}: {done} de-identified, {sum(held.values())} held, "
        f"{not_dicom} not DICOM (skipped); {removed} attributes removed, {replaced} replaced; "
        f"burned-in text: {regions} regions masked in {masked} instances "
        f"({identity} read as this patient's identifiers); written to {args.out_dir}"
    )
    if frames:
        print(
            f"  frames: {frames}, {scanned} scanned in full (the others text-free at first look); "
            f"regions unlike text: {rejected} left alone, {unsure} unsure (masked unless "
            f"deid.pixels.unsure=hold); {added} masked because OCR read the header's identity"
        )
    for reason, n in held.most_common():
        print(f"  held {n}: {reason}")
    return 0 if done or not files else 1


def deid_score(args: argparse.Namespace, settings: Settings) -> int:
    """``bridge deid-score ORIG OUT``: pair files by the keyed SOP Instance UID and score them."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    from bridge.deid.engine import masked_instance_uid
    from bridge.deid.pixels.score import PixelScore, ground_truth, score_pair
    from bridge.deid.pseudonyms import Pseudonymizer
    from bridge.deid.score import score
    from bridge.domain.errors import ConfigError

    secret = settings.deid.secret.get_secret_value() if settings.deid.secret else ""
    if len(secret) < 16:
        raise ConfigError("BRIDGE_DEID__SECRET (the one that de-identified the files) is required")
    pseudo = Pseudonymizer(secret.encode(), settings.deid.pseudonym_prefix)

    def read_all(folder: Path) -> list[tuple[Path, Any]]:
        out = []
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                try:
                    out.append((p, dcmread(p)))
                except (InvalidDicomError, OSError, ValueError):
                    continue
        return out

    outputs = {str(ds.SOPInstanceUID): ds for _, ds in read_all(args.deidentified)}
    pairs, missing = [], 0
    pixel = PixelScore()
    with_truth = 0
    for path, orig in read_all(args.originals):
        sop = str(orig.SOPInstanceUID)
        out = outputs.get(pseudo.uid(sop)) or outputs.get(masked_instance_uid(pseudo, sop))
        if out is None:
            missing += 1
        else:
            pairs.append((orig, out))
        truth = path.with_suffix(".json")
        if truth.is_file():
            with_truth += 1
            score_pair(orig, out, ground_truth(truth), pixel)
    result = score(pairs)
    print(result.report())
    if missing:
        print(f"originals without a de-identified output (held): {missing}")
    ok = result.clean and bool(pairs)
    if with_truth:
        print("burned-in text (ground truth beside the originals):")
        print(pixel.report())
        ok = ok and pixel.passed()
    return 0 if ok else 1


COMMANDS = (
    Command(
        "sample", "write a synthetic CT study with planted identities", _sample_arguments, sample
    ),
    Command(
        "deid",
        "de-identify DICOM files offline with the bridge's engine (a sample check)",
        _deid_arguments,
        deid_offline,
    ),
    Command(
        "deid-score",
        "score de-identified files against their originals (header leaks)",
        _score_arguments,
        deid_score,
    ),
)
