"""Patient media: a CD/DVD/USB folder (with or without a DICOMDIR) or a ZIP download.

:func:`scan` finds the DICOM instances (the DICOMDIR's records when there is one, else every
file of the folder), counts what is not DICOM (viewer software, autorun files, documents) and
reports malformed files by name, and groups the instances by study. :func:`import_study` copies
one study's files into the spool as a case, like a pull: the originals on the media are never
moved or changed. A ZIP is unpacked into a private temporary folder first, member by member,
refusing absolute paths, ``..`` and archives that grow past ``import_max_bytes``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from bridge.domain.errors import DatasetError, Kind, SubmitError
from bridge.logging import get_logger
from bridge.pipeline.intake import Origin, accept_file, read_header
from bridge.store import audit
from bridge.store.repo import Store
from bridge.store.spool import Spool

log = get_logger(__name__)

_DICM_OFFSET = 128


@dataclass
class MediaStudy:
    study_uid: str
    files: list[Path] = field(default_factory=list)
    modalities: set[str] = field(default_factory=set)
    description: str = ""
    date: str = ""


@dataclass
class MediaScan:
    studies: dict[str, MediaStudy] = field(default_factory=dict)
    not_dicom: int = 0
    #: Files that look like DICOM but cannot be used, with why (shown to the operator).
    malformed: list[tuple[str, str]] = field(default_factory=list)
    used_dicomdir: bool = False


def _looks_like_dicom(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            fh.seek(_DICM_OFFSET)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _dicomdir_files(dicomdir: Path) -> list[Path] | None:
    """The instance files a DICOMDIR references (None if it cannot be read)."""
    from pydicom.fileset import FileSet

    try:
        fs = FileSet(dcmread(dicomdir))
        paths = [Path(inst.path) for inst in fs]
    except (InvalidDicomError, ValueError, KeyError, AttributeError, OSError, TypeError):
        return None
    return [_case_insensitive(p) for p in paths]


def _case_insensitive(path: Path) -> Path:
    """Media written elsewhere: the DICOMDIR says IMAGES/IM0001, the disc has images/im0001."""
    if path.exists():
        return path
    current = Path(path.anchor or ".")
    for part in path.parts[1:] if path.is_absolute() else path.parts:
        candidate = current / part
        if not candidate.exists() and current.is_dir():
            lower = part.lower()
            match = next((c for c in current.iterdir() if c.name.lower() == lower), None)
            candidate = match or candidate
        current = candidate
    return current


def scan(root: Path, progress: Callable[[int, int], None] | None = None) -> MediaScan:
    """Find and group the DICOM instances under ``root`` (a folder or a DICOMDIR file)."""
    out = MediaScan()
    dicomdir = root if root.is_file() else _case_insensitive(root / "DICOMDIR")
    folder = root.parent if root.is_file() else root
    files = _dicomdir_files(dicomdir) if dicomdir.is_file() else None
    if files is not None:
        out.used_dicomdir = True
        referenced = {f.resolve() for f in files}
        out.not_dicom = sum(
            1
            for p in folder.rglob("*")
            if p.is_file() and p.resolve() not in referenced and p.resolve() != dicomdir.resolve()
        )
    else:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
    for i, path in enumerate(files, 1):
        if progress is not None:
            progress(i, len(files))
        rel = str(path.relative_to(folder)) if path.is_relative_to(folder) else path.name
        if not path.is_file():
            out.malformed.append((rel, "listed in the DICOMDIR but missing"))
            continue
        if path.name.upper() == "DICOMDIR" or not (out.used_dicomdir or _looks_like_dicom(path)):
            out.not_dicom += 1
            continue
        try:
            header = read_header(path)
            ds = dcmread(
                path, stop_before_pixels=True, specific_tags=["StudyDescription", "StudyDate"]
            )
        except DatasetError as exc:
            out.malformed.append((rel, exc.message))
            continue
        except (InvalidDicomError, ValueError, OSError, EOFError):
            out.malformed.append((rel, "not a readable DICOM instance"))
            continue
        study = out.studies.setdefault(
            header["StudyInstanceUID"], MediaStudy(header["StudyInstanceUID"])
        )
        study.files.append(path)
        if header["Modality"]:
            study.modalities.add(header["Modality"])
        study.description = study.description or str(ds.get("StudyDescription", "") or "")
        study.date = study.date or str(ds.get("StudyDate", "") or "")
    return out


def import_study(
    store: Store,
    spool: Spool,
    study: MediaStudy,
    origin: Origin,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, list[tuple[str, str]]]:
    """Copy the study's files into its case (``origin.case_id``); return (imported, refused)."""
    imported = 0
    refused: list[tuple[str, str]] = []
    for i, path in enumerate(study.files, 1):
        if progress is not None:
            progress(i, len(study.files))
        tmp = spool.new_tmp()
        try:
            shutil.copyfile(path, tmp)
            accept_file(store, spool, tmp, origin)
        except DatasetError as exc:
            refused.append((path.name, exc.message))
            continue
        finally:
            tmp.unlink(missing_ok=True)
        imported += 1
    return imported, refused


@contextmanager
def opened(
    path: Path, max_bytes: int, workdir: Path | None = None, min_free_bytes: int = 0
) -> Iterator[Path]:
    """The folder to scan: ``path`` itself, or a ZIP unpacked into a private temporary folder
    (inside ``workdir``: the spool's partial folder of this node, cleaned at every start),
    stopping with 507 before the filesystem's free space falls under ``min_free_bytes``."""
    if path.is_dir() or (path.is_file() and not zipfile.is_zipfile(path)):
        if not path.exists():
            raise SubmitError(
                "no such file or folder (the path given to import)", kind=Kind.NOT_FOUND
            )
        yield path
        return
    if not path.exists():
        raise SubmitError("no such file or folder (the path given to import)", kind=Kind.NOT_FOUND)
    with tempfile.TemporaryDirectory(prefix="bridge-import-", dir=workdir) as tmp:
        os.chmod(tmp, 0o700)
        _unzip(path, Path(tmp), max_bytes, min_free_bytes)
        yield Path(tmp)


#: How often (bytes written) the free space is looked at while unpacking.
_FREE_CHECK = 64 * 1024 * 1024


def _unzip(archive: Path, dest: Path, max_bytes: int, min_free_bytes: int = 0) -> None:
    total = 0
    checked = -_FREE_CHECK
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                name = PurePosixPath(info.filename.replace("\\", "/"))
                if name.is_absolute() or ".." in name.parts:
                    raise SubmitError("the ZIP holds a path outside its folder", kind=Kind.INVALID)
                target = dest.joinpath(*name.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("wb") as dst:
                    while chunk := src.read(1 << 20):
                        total += len(chunk)
                        if total > max_bytes:
                            raise SubmitError(
                                f"the ZIP unpacks to more than {max_bytes} bytes "
                                "(BRIDGE_SUBMIT__IMPORT_MAX_BYTES)",
                                kind=Kind.TOO_LARGE,
                            )
                        if min_free_bytes and total - checked >= _FREE_CHECK:
                            checked = total
                            free = shutil.disk_usage(dest).free
                            if free - len(chunk) < min_free_bytes:
                                raise SubmitError(
                                    "not enough free disk space to unpack the ZIP "
                                    "(BRIDGE_SPOOL__MIN_FREE_BYTES)",
                                    kind=Kind.NO_SPACE,
                                )
                        dst.write(chunk)
    except zipfile.BadZipFile:
        raise SubmitError("the ZIP file is damaged", kind=Kind.INVALID) from None


@dataclass
class MediaCase:
    study_uid: str
    case_id: str | None
    imported: int = 0
    resumed: bool = False
    #: Why the study was not submitted (an open case, nothing readable), or None.
    problem: str | None = None
    refused: list[tuple[str, str]] = field(default_factory=list)


def submit_media(
    store: Store,
    spool: Spool,
    studies: list[MediaStudy],
    *,
    question: str,
    subspecialty: str,
    priority: str,
    submitted_by: str,
    progress: Callable[[int, int], None] | None = None,
) -> list[MediaCase]:
    """One case per study, the question scrubbed with that study's own identifiers. A study
    whose import was interrupted (its case still "retrieving") is resumed, not duplicated."""
    from bridge.deid.scrub import identifying_tokens, scrub_text
    from bridge.store.submissions import NewCase, create_case, finish_retrieve

    out: list[MediaCase] = []
    for s in studies:
        tokens = identifying_tokens(dcmread(s.files[0], stop_before_pixels=True))
        new = NewCase(
            study_uid=s.study_uid,
            source="import",
            subspecialty=subspecialty,
            priority=priority,
            question=scrub_text(question, tokens),
            expected_instances=len(s.files),
            submitted_by=submitted_by,
            retrieve=None,
        )
        result = MediaCase(s.study_uid, None)
        try:
            result.case_id = create_case(store, new)
        except SubmitError as exc:
            case_id = str(exc.context.get("case_id", ""))
            case = store.cases.get(case_id) if case_id else None
            if case is None or case["source"] != "import" or case["state"] != "retrieving":
                result.problem = str(exc)
                out.append(result)
                continue
            result.case_id, result.resumed = case_id, True
        origin = Origin(
            subspecialty=subspecialty,
            priority=priority,
            question=new.question,
            case_id=result.case_id,
        )
        result.imported, result.refused = import_study(store, spool, s, origin, progress)
        if result.imported == 0 and not store.instances.of_case(result.case_id):
            finish_retrieve(store, result.case_id, "import: no instance could be read")
            result.problem = "no instance could be read"
        else:
            finish_retrieve(store, result.case_id)
        audit.record(
            store,
            submitted_by,
            "case.imported",
            case_id=result.case_id,
            instances=result.imported,
            resumed=result.resumed,
        )
        log.info(
            "import.submitted",
            case_id=result.case_id,
            imported=result.imported,
            refused=len(result.refused),
        )
        out.append(result)
    return out
