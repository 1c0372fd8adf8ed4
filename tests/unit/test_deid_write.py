"""Writing de-identified datasets (bridge/deid/write.py): the same bytes as pydicom's writer,
the preamble zeros, on every test file pydicom ships, on their de-identified versions and on
the shared corpora (when present)."""

from __future__ import annotations

import warnings
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from bridge.deid.engine import Deidentifier
from bridge.deid.profile import build_profile
from bridge.deid.pseudonyms import Pseudonymizer
from bridge.deid.write import save
from bridge.dicom import set_file_meta
from conftest import CORPUS, VALIDATION

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _readable(root: Path, pattern: str = "*") -> list[Path]:
    out = []
    for path in sorted(p for p in root.rglob(pattern) if p.is_file()):
        try:
            dcmread(path)
        except Exception:  # noqa: BLE001, S112 - not a DICOM file
            continue
        out.append(path)
    return out


def _pydicom_bytes(ds: Dataset) -> bytes | None:
    buf = BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=True)
    except Exception:  # noqa: BLE001 - pydicom cannot write it either
        return None
    return buf.getvalue()


def _ours(ds: Dataset) -> bytes:
    buf = BytesIO()
    save(ds, buf)
    return buf.getvalue()


def _same(make: object) -> bool | None:
    """Our bytes against pydicom's for two copies of one dataset; None if pydicom cannot."""
    theirs = _pydicom_bytes(make())  # type: ignore[operator]
    if theirs is None:
        return None
    ours = _ours(make())  # type: ignore[operator]
    assert ours[:128] == bytes(128)  # the preamble read with the file is not carried
    return ours[128:] == theirs[128:]


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.simplefilter("ignore")  # pydicom's warnings on its deliberately odd test files


def test_the_same_bytes_as_pydicom_on_its_own_test_files() -> None:
    files = _readable(PYDICOM_FILES)
    assert len(files) > 100
    results = {f.name: _same(lambda f=f: dcmread(f)) for f in files}
    written = [name for name, same in results.items() if same is not None]
    assert len(written) > 100
    assert [name for name in written if not results[name]] == []


def test_the_same_bytes_as_pydicom_on_de_identified_test_files() -> None:
    engine = Deidentifier(build_profile(), Pseudonymizer(b"write-test-secret-0123"), "m")

    def deidentified(path: Path) -> Dataset:
        return engine.deidentify(dcmread(path)).dataset

    same = []
    for path in _readable(PYDICOM_FILES):
        try:
            deidentified(path)
        except Exception:  # noqa: BLE001, S112 - refused (no UIDs, a DICOMDIR): not written
            continue
        same.append((path.name, _same(lambda p=path: deidentified(p))))
    assert len(same) > 100
    assert [name for name, ok in same if ok is False] == []


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared is absent")
def test_the_same_bytes_as_pydicom_on_the_shared_corpora() -> None:
    engine = Deidentifier(build_profile(), Pseudonymizer(b"write-test-secret-0123"), "m")
    files = _readable(CORPUS, "*.dcm") + _readable(VALIDATION, "*.dcm")
    assert len(files) > 100
    for path in files:
        assert _same(lambda p=path: dcmread(p)), path.name
        assert _same(lambda p=path: engine.deidentify(dcmread(p)).dataset), path.name


def _made(transfer_syntax: str, charset: str | list[str] | None) -> Dataset:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4.5"  # odd length: padded with a NUL
    ds.StudyInstanceUID = "1.2.3.4"
    ds.PatientName = "Müller^Jürgen=山田^太郎" if charset == "ISO_IR 192" else "Muller^J"
    ds.StudyDescription = "Thorax ä" if charset else "Thorax"  # odd length in bytes
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientComments = "a\\b, not two values"
    ds.InstitutionName = ""
    ds.Rows, ds.Columns = 1, 1
    ds.PixelSpacing = [0.5, 0.25]
    item = Dataset()
    item.CodeValue = "113100"
    item.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = Sequence([item])
    ds.OtherPatientIDsSequence = Sequence()
    set_file_meta(ds, transfer_syntax)
    return ds


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize("charset", [None, "ISO_IR 100", "ISO_IR 192", ["", "ISO 2022 IR 100"]])
def test_the_same_bytes_for_values_made_in_memory(syntax: str, charset: object) -> None:
    assert _same(lambda: _made(syntax, charset))  # type: ignore[arg-type]

    def read_then_changed() -> Dataset:
        ds = dcmread(BytesIO(_ours(_made(syntax, charset))))  # type: ignore[arg-type]
        ds.StudyDescription = "Changed, now odd"
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.OtherPatientIDsSequence = Sequence([Dataset()])
        return ds

    assert _same(read_then_changed)


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
@pytest.mark.parametrize(
    ("charset", "vr", "text"),
    [
        (None, "UI", "2.25.1234"),  # odd: padded with a NUL
        (None, "UI", "2.25.123"),
        (None, "DA", "20240311\\19991231"),
        (None, "CS", "YES"),
        (None, "LO", "SO-ABC"),
        (None, "PN", "SO^ABCDE"),
        (None, "SH", ""),
        ("ISO_IR 100", "LO", "Bébé Müller"),
        ("ISO_IR 100", "LT", "Patient [removed] called back"),
        ("ISO_IR 192", "SH", "Ĳssel ✓"),
        ("ISO_IR 192", "PN", "ANONYMOUS"),
        ("ISO_IR 192", "PN", "Ĳssel^Ærø"),  # beyond ASCII: pydicom encodes it
        ("ISO_IR 100", "SH", "日本"),  # not in the character set: pydicom decides
        ("ISO 2022 IR 6\\ISO 2022 IR 87", "LO", "ANONYMIZED"),  # several codecs
        (None, "UT", "x" * 70_001),  # a 32-bit length
        (None, "LO", "y" * 70_001),  # too long for a 16-bit length in explicit VR
    ],
)
def test_elements_the_engine_sets_are_the_bytes_pydicom_writes(charset, vr, text, implicit):
    """The engine sets changed string elements as raw bytes in the dataset's encoding
    (bridge.deid.write.text_element); written, they are what pydicom writes for the value."""
    from pydicom.datadict import DicomDictionary
    from pydicom.dataelem import DataElement
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from bridge.deid.write import text_element
    from bridge.dicom import one_codec

    tag = min(t for t, entry in DicomDictionary.items() if entry[0] == vr)  # (implicit VR)

    def written(elem: object) -> bytes:
        ds = Dataset()
        if charset:
            ds.SpecificCharacterSet = charset.split("\\")
        ds[tag] = elem
        fp = DicomBytesIO()
        fp.is_implicit_VR, fp.is_little_endian = implicit, True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_dataset(fp, ds)
        return fp.getvalue()

    raw = text_element(tag, vr, text, one_codec(charset and charset.split("\\")), (implicit, True))
    must_decide = (vr == "PN" and not text.isascii()) or text == "日本" or "2022" in (charset or "")
    if must_decide or (vr == "LO" and not implicit and len(text) > 0xFFFF):
        assert raw is None
        return
    assert raw is not None
    assert written(raw) == written(DataElement(tag, vr, text.split("\\") if "\\" in text else text))
    assert text_element(tag, vr, text, "latin_1", (None, None)) is None  # made in memory
    assert text_element(tag, vr, text, "latin_1", (implicit, False)) is None  # big endian
