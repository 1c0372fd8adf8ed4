"""The ``bridge`` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge import __version__
from bridge.config import Settings
from bridge.domain.errors import BridgeError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bridge", description="SECONDOPINION: the second-opinion DICOM bridge."
    )
    p.add_argument(
        "--config", type=Path, help="TOML settings file (see config/bridge.example.toml)"
    )
    p.add_argument("--version", action="version", version=f"bridge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the listener, the workers and the HTTP server")
    serve.add_argument(
        "--no-workers",
        action="store_true",
        help="listener and HTTP server only (`bridge worker` processes do the pipeline)",
    )
    worker = sub.add_parser("worker", help="run pipeline workers only (serve starts its own)")
    worker.add_argument("--index", type=int, default=0, help="worker number on this node")
    sub.add_parser("migrate", help="bring the state store schema up to date")
    sub.add_parser("doctor", help="check everything configured; exit 0 only when all pass")
    cases = sub.add_parser("cases", help="list cases")
    cases.add_argument("--state", help="only cases in this state")
    cases.add_argument("--limit", type=int, default=50)
    cases.add_argument("--json", action="store_true", help="print JSON")
    case = sub.add_parser("case", help="show one case")
    case.add_argument("case_id")
    sample = sub.add_parser("sample", help="write a synthetic CT study with planted identities")
    sample.add_argument("out_dir", type=Path)
    sample.add_argument("--instances", type=int, default=20)
    sample.add_argument("--size", type=int, default=512, help="rows and columns")
    sub.add_parser("settings", help="print the effective settings (secrets masked)")
    deid = sub.add_parser(
        "deid", help="de-identify DICOM files offline with the bridge's engine (a sample check)"
    )
    deid.add_argument("in_dir", type=Path)
    deid.add_argument("out_dir", type=Path)
    deid.add_argument("--profile", choices=["basic", "reading"], help="default: the setting")
    sc = sub.add_parser(
        "deid-score", help="score de-identified files against their originals (header leaks)"
    )
    sc.add_argument("originals", type=Path)
    sc.add_argument("deidentified", type=Path)
    from bridge.submit_cli import add_import_parser, add_parsers

    add_parsers(sub)
    add_import_parser(sub)
    from bridge.user_cli import add_audit_parser, add_vault_parser
    from bridge.user_cli import add_parser as add_user_parser

    add_user_parser(sub)
    add_audit_parser(sub)
    add_vault_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from bridge.config import load_settings
    from bridge.logging import configure

    try:
        settings = load_settings(args.config)
        configure(settings.log_format, settings.log_level)
        return _run(args, settings)
    except BridgeError as exc:
        print(f"bridge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command in ("serve", "worker"):
        # Every process of the group writes its metrics where /metrics can read them. This must
        # happen before prometheus_client is first imported.
        mp_dir = settings.data_dir / "metrics"
        if args.command == "serve" and mp_dir.is_dir():
            for f in mp_dir.glob("*.db"):
                f.unlink()
        mp_dir.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(mp_dir.resolve())
        from bridge.service import serve, worker

        if args.command == "serve":
            return serve(settings, args.config, workers_here=not args.no_workers)
        return worker(settings, args.index)
    if args.command == "migrate":
        from bridge.service import open_store

        store = open_store(settings)
        print("state store schema is up to date")
        store.engine.dispose()
        return 0
    if args.command in ("cases", "case"):
        from bridge.service import open_store
        from bridge.web.schemas import case_out

        store = open_store(settings)
        if args.command == "case":
            c = store.get_case(args.case_id)
            if c is None:
                print(f"bridge: no case {args.case_id}", file=sys.stderr)
                return 1
            print(case_out(c).model_dump_json(indent=2))
            return 0
        rows = [case_out(c) for c in store.list_cases(args.state, args.limit)]
        if args.json:
            print(json.dumps([r.model_dump() for r in rows], indent=2))
            return 0
        print(f"{'CASE':16}  {'STATE':12}  {'INST':>5}  {'FWD':>5}  {'SUBSPEC':9}  CREATED")
        for r in rows:
            print(
                f"{r.id:16}  {r.state.value:12}  {r.instances.total:5}  "
                f"{r.instances.forwarded:5}  {r.subspecialty:9}  {r.created_at}"
            )
        return 0
    if args.command == "sample":
        from bridge.sample import make_study

        study = make_study(args.out_dir, args.instances, rows=args.size, columns=args.size)
        print(f"wrote {len(study.paths)} instances to {args.out_dir}")
        return 0
    if args.command == "deid":
        return _deid_offline(args, settings)
    if args.command == "deid-score":
        return _deid_score(args, settings)
    if args.command == "find":
        from bridge.submit_cli import find

        return find(args, settings)
    if args.command == "submit":
        from bridge.submit_cli import submit_cmd

        return submit_cmd(args, settings)
    if args.command == "doctor":
        from bridge.doctor import FAIL, print_table, run_checks

        checks = run_checks(settings)
        print_table(checks)
        return 1 if any(c.verdict == FAIL for c in checks) else 0
    if args.command == "vault":
        from bridge.user_cli import vault_cmd

        return vault_cmd(args, settings)
    if args.command == "audit":
        from bridge.user_cli import audit_cmd

        return audit_cmd(args, settings)
    if args.command == "user":
        from bridge.user_cli import run

        return run(args, settings)
    if args.command == "import":
        from bridge.submit_cli import import_cmd

        return import_cmd(args, settings)
    if args.command == "settings":
        print(settings.model_dump_json(indent=2))
        return 0
    return 2


def _deid_offline(args: argparse.Namespace, settings: Settings) -> int:
    """``bridge deid IN OUT``: the same engine as the pipeline, on files, with a summary."""
    from bridge.deid.build import make_deidentifier
    from bridge.deid.engine import write_result
    from bridge.domain.errors import ConfigError, DeidError

    if not args.in_dir.is_dir():
        raise ConfigError(f"not a folder: {args.in_dir}")
    engine = make_deidentifier(settings, args.profile)
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


def _deid_score(args: argparse.Namespace, settings: Settings) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
