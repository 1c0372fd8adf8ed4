"""``bridge find``, ``bridge submit`` and ``bridge import``: search the PACS, send a study (from
the PACS or from a patient's media) for a second opinion.

``submit`` opens the case in the state store and follows it with a live progress line
(retrieved / de-identified / forwarded) until the study is forwarded, fails, or ``--no-wait``.
The running bridge (``bridge serve``) does the work: it must be running for the case to move.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

# Only light imports at the top: `bridge` builds its parser from every command module before the
# runtime sets up the metrics (PROMETHEUS_MULTIPROC_DIR must come before prometheus_client).
from bridge.cli.command import Command
from bridge.config import Settings
from bridge.domain.errors import ConfigError, Kind, SubmitError
from bridge.domain.states import CaseState
from bridge.domain.vocabulary import PRIORITIES, SUBSPECIALTIES

if TYPE_CHECKING:
    from bridge.store.repo import Store

_FINAL = (CaseState.FORWARDED, CaseState.FINDINGS_RECEIVED, CaseState.RETURNED, CaseState.FAILED)


def _find_arguments(find: argparse.ArgumentParser) -> None:
    find.add_argument("--patient-id", default="")
    find.add_argument("--name", default="", help="patient name; wildcards * and ? allowed")
    find.add_argument("--accession", default="")
    find.add_argument("--study-uid", default="")
    find.add_argument("--from", dest="date_from", type=date.fromisoformat, help="YYYY-MM-DD")
    find.add_argument("--to", dest="date_to", type=date.fromisoformat, help="YYYY-MM-DD")
    find.add_argument("--modality", default="")
    find.add_argument("--limit", type=int, default=50)
    find.add_argument("--json", action="store_true", help="print JSON")


def _submit_arguments(sm: argparse.ArgumentParser) -> None:
    sm.add_argument("study_uid", nargs="?", default="", help="Study Instance UID")
    sm.add_argument("--accession", default="", help="name the study by its accession number")
    sm.add_argument("--question", required=True, help="the clinical question for the reader")
    sm.add_argument("--subspecialty", choices=SUBSPECIALTIES, default="general")
    sm.add_argument("--priority", choices=PRIORITIES, default="routine")
    sm.add_argument(
        "--report-file",
        type=argparse.FileType("r", encoding="utf-8"),
        help="the original report (text); scrubbed of the patient's identifiers before sending",
    )
    sm.add_argument(
        "--priors", type=int, default=0, help="also send the N most recent earlier studies"
    )
    sm.add_argument("--no-wait", action="store_true", help="return once the case is open")
    sm.add_argument("--timeout", type=float, default=3600.0, help="seconds to follow the case")


def find(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from bridge.peers.connect import make_pacs
    from bridge.peers.pacs import StudyQuery

    query = StudyQuery(
        patient_id=args.patient_id,
        patient_name=args.name,
        accession=args.accession,
        study_uid=args.study_uid,
        date_from=args.date_from,
        date_to=args.date_to,
        modality=args.modality,
        limit=args.limit,
    )
    client = make_pacs(settings.pacs, settings.dimse, _no_files)
    try:
        matches = client.search(query)
    finally:
        client.close()
    if args.json:
        print(json.dumps([m.as_dict() for m in matches], indent=2))
        return 0
    if not matches:
        print("no study matches", file=sys.stderr)
        return 1
    print(
        f"{'DATE':10}  {'PATIENT ID':14}  {'NAME':22}  {'ACCESSION':12}  {'MOD':7}  "
        f"{'SER':>3}  {'INST':>5}  {'DESCRIPTION':24}  STUDY UID"
    )
    for m in matches:
        d = m.as_dict()
        day = str(d["study_date"])
        day = f"{day[:4]}-{day[4:6]}-{day[6:8]}" if len(day) == 8 else day
        print(
            f"{day:10}  {str(d['patient_id'])[:14]:14}  {str(d['patient_name'])[:22]:22}  "
            f"{str(d['accession_number'])[:12]:12}  {'/'.join(m.modalities)[:7]:7}  "
            f"{d['series'] if d['series'] is not None else '':>3}  "
            f"{d['instances'] if d['instances'] is not None else '':>5}  "
            f"{str(d['study_description'])[:24]:24}  {m.study_uid}"
        )
    return 0


def _no_files() -> Path:
    raise ConfigError("a search does not retrieve")


def submit_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.peers.connect import make_pacs
    from bridge.pipeline.submit import Submission, submit
    from bridge.runtime.node import open_store
    from bridge.store.spool import Spool

    if bool(args.study_uid) == bool(args.accession):
        raise SubmitError(
            "give a Study Instance UID or --accession (one of them)", kind=Kind.INVALID
        )
    report = args.report_file.read() if args.report_file else None
    store = open_store(settings)
    spool = Spool(settings.spool_dir, settings.spool, store.node_id)
    client = make_pacs(settings.pacs, settings.dimse, spool.new_tmp)
    try:
        case_id, match = submit(
            settings.submit,
            store,
            client,
            Submission(
                question=args.question,
                subspecialty=args.subspecialty,
                priority=args.priority,
                study_uid=args.study_uid,
                accession=args.accession,
                original_report=report,
                submitted_by="cli",
                priors=args.priors,
            ),
        )
    finally:
        client.close()
    expected = match.count("NumberOfStudyRelatedInstances")
    print(f"case {case_id} opened for study {match.study_uid} ({expected or '?'} instances)")
    if args.no_wait:
        return 0
    return follow(store, case_id, args.timeout)


def follow(store: Store, case_id: str, timeout: float) -> int:
    """Print the case's progress until it is forwarded or fails; exit code 0 when forwarded."""
    tty = sys.stdout.isatty()
    last = ""
    deadline = time.monotonic() + timeout
    case = store.cases.get(case_id)
    while case is not None:
        n = case["instances"]
        expected = case.get("expected_instances")
        line = (
            f"{case['state']:12}  retrieved {n['total']}"
            + (f"/{expected}" if expected else "")
            + f"  de-identified {n['deidentified'] + n['forwarded']}"
            + f"  forwarded {n['forwarded']}"
            + (f"  held {n['quarantined']}" if n["quarantined"] else "")
        )
        if line != last:
            print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)
            last = line
        if case["state"] in _FINAL or time.monotonic() > deadline:
            break
        time.sleep(0.5)
        case = store.cases.get(case_id)
    if tty:
        print()
    if case is None:
        print(f"bridge: case {case_id} disappeared", file=sys.stderr)
        return 1
    if case["error"]:
        print(f"  {case['error']}", file=sys.stderr)
    if case["state"] == CaseState.FAILED:
        return 1
    if case["state"] not in _FINAL:
        print(f"bridge: still {case['state']} after {timeout:.0f} s", file=sys.stderr)
        return 3
    return 0


def _import_arguments(im: argparse.ArgumentParser) -> None:
    im.add_argument("path", type=Path, help="a folder, a DICOMDIR file or a .zip")
    im.add_argument("--question", help="the clinical question for the reader")
    im.add_argument("--subspecialty", choices=SUBSPECIALTIES, default="general")
    im.add_argument("--priority", choices=PRIORITIES, default="routine")
    im.add_argument(
        "--study", action="append", default=[], help="only this Study Instance UID (repeatable)"
    )
    im.add_argument("--list", action="store_true", help="list the studies found; submit nothing")


def _bar(label: str) -> Callable[[int, int], None] | None:
    if not sys.stderr.isatty():
        return None

    def show(i: int, n: int) -> None:
        width = 30
        done = int(width * i / max(n, 1))
        print(f"\r  {label} [{'#' * done}{'.' * (width - done)}] {i}/{n}", end="", file=sys.stderr)
        if i == n:
            print(file=sys.stderr)

    return show


def import_cmd(args: argparse.Namespace, settings: Settings) -> int:
    """``bridge import PATH``: one case per study found on the media."""
    from bridge.pipeline.media_import import opened, scan, submit_media
    from bridge.pipeline.submit import Submission, validate
    from bridge.runtime.node import open_store
    from bridge.store.spool import Spool

    if not args.list:
        if not args.question:
            raise SubmitError("--question is required to submit (or use --list)", kind=Kind.INVALID)
        validate(
            settings.submit,
            Submission(
                question=args.question,
                subspecialty=args.subspecialty,
                priority=args.priority,
                study_uid="media",
            ),
        )
    with opened(
        args.path, settings.submit.import_max_bytes, min_free_bytes=settings.spool.min_free_bytes
    ) as folder:
        found = scan(folder, _bar("reading"))
        studies = [s for s in found.studies.values() if not args.study or s.study_uid in args.study]
        print(
            f"{len(found.studies)} stud{'y' if len(found.studies) == 1 else 'ies'} found"
            f"{' (from the DICOMDIR)' if found.used_dicomdir else ''}; "
            f"{found.not_dicom} file(s) not DICOM (viewer software, documents), skipped; "
            f"{len(found.malformed)} malformed"
        )
        for name, why in found.malformed:
            print(f"  malformed: {name}: {why}", file=sys.stderr)
        for s in studies:
            day = f"{s.date[:4]}-{s.date[4:6]}-{s.date[6:8]}" if len(s.date) == 8 else s.date
            print(
                f"  {day:10}  {'/'.join(sorted(s.modalities)):8}  {len(s.files):5} instances  "
                f"{s.description[:32]:32}  {s.study_uid}"
            )
        if args.list or not studies:
            return 0 if studies or args.list else 1
        store = open_store(settings)
        spool = Spool(settings.spool_dir, settings.spool, store.node_id)
        results = submit_media(
            store,
            spool,
            studies,
            question=args.question,
            subspecialty=args.subspecialty,
            priority=args.priority,
            submitted_by="cli",
            progress=_bar("importing"),
        )
        failures = 0
        for r in results:
            for name, why in r.refused:
                print(f"  refused: {name}: {why}", file=sys.stderr)
            if r.problem:
                failures += 1
                print(f"  {r.study_uid}: {r.problem}", file=sys.stderr)
                continue
            if r.resumed:
                print(f"  {r.study_uid}: resumed the interrupted import of case {r.case_id}")
            print(f"case {r.case_id}: {r.imported} instance(s) of study {r.study_uid} submitted")
        return 1 if failures else 0


COMMANDS = (
    Command("find", "search the hospital PACS for studies", _find_arguments, find),
    Command(
        "submit", "send a study from the PACS for a second opinion", _submit_arguments, submit_cmd
    ),
    Command(
        "import",
        "submit the studies of a patient's disc, USB stick or ZIP download",
        _import_arguments,
        import_cmd,
    ),
)
