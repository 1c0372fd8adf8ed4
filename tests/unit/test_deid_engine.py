"""The de-identification engine on synthetic planted datasets (no servers)."""

from __future__ import annotations

import subprocess
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import JPEGBaseline8Bit

from bridge.deid.engine import Deidentifier, write_result
from bridge.deid.profile import build_profile
from bridge.deid.pseudonyms import Pseudonymizer
from bridge.domain.errors import DeidError
from bridge.sample import PlantedPatient, make_study
from tests.helpers import leaks

SECRET = b"unit-test-secret-0123456789"


@pytest.fixture
def engine() -> Deidentifier:
    return Deidentifier(build_profile(), Pseudonymizer(SECRET), "test method")


def _roundtrip(ds: Dataset) -> Dataset:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return dcmread(BytesIO(buf.getvalue()))


def test_planted_identity_removed_everywhere(tmp_path, engine):
    study = make_study(tmp_path, 2, rows=16, columns=16)
    assert len(study.planted) >= 30
    src = dcmread(study.paths[0])
    assert len(leaks(src, study.planted)) >= 30  # the check sees them in the original
    res = engine.deidentify_file(study.paths[0])
    out = _roundtrip(res.dataset)
    assert leaks(out, study.planted) == []
    assert out.PixelData == src.PixelData
    assert out.PatientIdentityRemoved == "YES"
    assert out.DeidentificationMethod == "test method"
    code = out.DeidentificationMethodCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("113100", "DCM")
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert "SourceApplicationEntityTitle" not in out.file_meta
    # kept: what a reader needs and the table does not list
    assert out.Modality == "CT" and out.Rows == 16 and out.SliceThickness == 5.0
    assert out.BodyPartExamined == "HEAD"


def test_uids_are_keyed_consistent_and_mapped_back(tmp_path, engine):
    study = make_study(tmp_path, 3, rows=8, columns=8)
    results = [engine.deidentify_file(p) for p in study.paths]
    assert len({r.pseudo_study_uid for r in results}) == 1
    assert len({r.dataset.FrameOfReferenceUID for r in results}) == 1
    for r in results:
        assert r.pseudo_sop_uid.startswith("2.25.") and len(r.pseudo_sop_uid) <= 64
        assert r.uid_map[r.pseudo_sop_uid] == r.original_sop_uid
        assert r.uid_map[r.pseudo_study_uid] == study.study_uid
    other = Deidentifier(build_profile(), Pseudonymizer(b"another-secret-0123456789"), "x")
    assert other.deidentify_file(study.paths[0]).pseudo_sop_uid != results[0].pseudo_sop_uid


def test_same_patient_same_pseudonym_issuer_matters(tmp_path, engine):
    a = engine.deidentify_file(make_study(tmp_path / "a", 1, rows=8, columns=8).paths[0])
    b = engine.deidentify_file(make_study(tmp_path / "b", 1, rows=8, columns=8).paths[0])
    c = engine.deidentify_file(
        make_study(
            tmp_path / "c", 1, rows=8, columns=8, patient=PlantedPatient(issuer="OTHER-HOSPITAL")
        ).paths[0]
    )
    assert a.pseudo_patient_id == b.pseudo_patient_id != c.pseudo_patient_id
    assert a.dataset.PatientName == a.pseudo_patient_id.replace("-", "^", 1)


def test_unknown_and_private_removed_at_every_level(engine):
    ds = _minimal()
    inner = Dataset()
    inner.add_new(0x00091010, "LO", "PRIVATE-INNER")
    inner.add_new(0x00431001, "LO", "PRIVATE-DEEP")  # private tag without creator
    inner.PatientName = "NESTED^NAME"
    ds.ReferencedImageSequence = Sequence([inner])
    ds.add_new(0x00090010, "LO", "VENDOR")
    res = engine.deidentify(ds)
    out = _roundtrip(res.dataset)
    assert leaks(out, ["PRIVATE-INNER", "PRIVATE-DEEP", "NESTED", "VENDOR"]) == []


def test_encapsulated_pixel_data_passes_through(engine):
    ds = _minimal()
    frames = [b"\xff\xd8\xff\xe0" + bytes(range(200)) + b"\xff\xd9"]
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    out = _roundtrip(engine.deidentify(ds).dataset)
    assert out.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert out.PixelData == ds.PixelData


@pytest.mark.parametrize(
    "conv", [["+td"], ["+tb"], ["+ti"]], ids=["deflate", "bigendian", "implicit"]
)
def test_transfer_syntaxes_survive(tmp_path, engine, conv):
    study = make_study(tmp_path, 1, rows=16, columns=16)
    dst = tmp_path / "conv.dcm"
    subprocess.run(["dcmconv", *conv, str(study.paths[0]), str(dst)], check=True)
    src = dcmread(dst)
    out = _roundtrip(engine.deidentify_file(dst).dataset)
    assert out.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID
    assert out.PixelData == src.PixelData
    assert leaks(out, study.planted) == []


def test_missing_uid_is_refused(engine):
    ds = _minimal()
    del ds.StudyInstanceUID
    with pytest.raises(DeidError) as err:
        engine.deidentify(ds)
    assert "StudyInstanceUID" in str(err.value)


def test_deep_nesting_is_refused(engine):
    ds = _minimal()
    cur = ds
    for _ in range(40):
        item = Dataset()
        cur.ReferencedImageSequence = Sequence([item])
        cur = item
    with pytest.raises(DeidError):
        engine.deidentify(ds)


def test_unreadable_file_is_refused(tmp_path: Path, engine):
    p = tmp_path / "junk.dcm"
    p.write_bytes(b"not dicom at all")
    with pytest.raises(DeidError):
        engine.deidentify_file(p)


def _minimal() -> Dataset:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4.1"
    ds.StudyInstanceUID = "1.2.3.4.2"
    ds.SeriesInstanceUID = "1.2.3.4.3"
    ds.PatientID = "X1"
    ds.Modality = "OT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_encapsulated_documents_are_held_not_forwarded(engine):
    ds = _minimal()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4 scanned referral letter for DOE^JANE"
    with pytest.raises(DeidError) as err:
        engine.deidentify(ds)
    assert "encapsulated document may contain identity" in str(err.value)


def _with_privates() -> Dataset:
    ds = _minimal()
    ds.add_new(0x00190010, "LO", "GEMS_ACQU_01")
    ds.add_new(0x00191023, "DS", "12.5")  # Table E.3.10-1: safe (table speed)
    ds.add_new(0x00191030, "LO", "PRIVATE-NOT-LISTED")  # not on the table
    ds.add_new(0x00290010, "LO", "SOMEVENDOR")
    ds.add_new(0x00291023, "LO", "PRIVATE-OTHER-CREATOR")  # same offset, unknown creator
    return ds


def test_retain_safe_private_keeps_only_table_e3101_elements():
    reading = Deidentifier(build_profile("reading"), Pseudonymizer(b"s" * 20), "test")
    out = _roundtrip(reading.deidentify(_with_privates()).dataset)
    assert out[0x00190010].value == "GEMS_ACQU_01" and float(out[0x00191023].value) == 12.5
    assert leaks(out, ["PRIVATE-NOT-LISTED", "PRIVATE-OTHER-CREATOR", "SOMEVENDOR"]) == []
    basic = Deidentifier(build_profile("basic"), Pseudonymizer(b"s" * 20), "test")
    out = _roundtrip(basic.deidentify(_with_privates()).dataset)
    assert not any(e.tag.is_private for e in out)


def test_strict_profile_removes_what_no_table_lists():
    ds = _minimal()
    ds.AcquisitionMatrix = [0, 256, 256, 0]  # standard, unlisted, not on the strict keep list
    ds.SliceThickness = "1.5"  # on the keep list
    strict = Deidentifier(build_profile("strict"), Pseudonymizer(b"s" * 20), "test")
    out = _roundtrip(strict.deidentify(ds).dataset)
    assert "AcquisitionMatrix" not in out and out.SliceThickness == 1.5
    assert out.PatientIdentityRemoved == "YES"


def test_free_text_in_structured_content_is_cleaned_or_removed():
    def sr() -> Dataset:
        ds = _minimal()
        ds.PatientName = "CONTENTFAMILY^ANNA"
        item = Dataset()
        item.ValueType = "TEXT"
        item.TextValue = "Nodule stable. Discussed with CONTENTFAMILY on the phone."
        ds.ContentSequence = Sequence([item])
        return ds

    reading = Deidentifier(build_profile("reading"), Pseudonymizer(b"s" * 20), "test")
    out = _roundtrip(reading.deidentify(sr()).dataset)
    text = out.ContentSequence[0].TextValue
    assert "Nodule stable" in text and "CONTENTFAMILY" not in text
    basic = Deidentifier(build_profile("basic"), Pseudonymizer(b"s" * 20), "test")
    out = _roundtrip(basic.deidentify(sr()).dataset)
    assert "TextValue" not in out.ContentSequence[0]


def test_elements_encoded_as_un_are_de_identified_as_their_dictionary_vr(engine):
    """Archives forward attributes they do not know in explicit VR as UN. pydicom reads them as
    their dictionary VR; so does the engine: a sequence among them is walked like any other (its
    UIDs mapped; it used to be kept whole, the original UID in it), a dummy is text."""
    path = Path(pydicom.__file__).parent / "data" / "test_files" / "rtdose_rle.dcm"
    original_uid = "1.2.123.456.78.9.0123.4567.89012345678901"
    src = dcmread(path)
    assert src.get_item(0x300C0002).VR == "UN"  # Referenced RT Plan Sequence
    assert original_uid.encode() in path.read_bytes()
    res = engine.deidentify_file(path)
    buf = BytesIO()
    write_result(res, buf)
    assert original_uid.encode() not in buf.getvalue()
    out = dcmread(BytesIO(buf.getvalue()))
    mapped = out.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID
    assert res.uid_map[mapped] == original_uid
    assert out.StationName == "ANONYMIZED"


@pytest.mark.parametrize(
    "name",
    ["MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small.dcm", "image_dfl.dcm"],
)
def test_method_codes_read_in_memory_and_written_in_every_encoding(engine, name):
    """The code sequence is put in as bytes in the dataset's own encoding (made once per set of
    methods): pydicom reads it in memory, and it is written in the file's transfer syntax."""
    src = Path(pydicom.__file__).parent / "data" / "test_files" / name
    res = engine.deidentify(dcmread(src))
    codes = [item.CodeValue for item in res.dataset.DeidentificationMethodCodeSequence]
    assert codes[0] == "113100" and len(codes) == len(set(codes))
    buf = BytesIO()
    write_result(res, buf)
    out = dcmread(BytesIO(buf.getvalue()))
    assert out.file_meta.TransferSyntaxUID == dcmread(src).file_meta.TransferSyntaxUID
    written = out.DeidentificationMethodCodeSequence
    assert [item.CodeValue for item in written] == codes
    assert all(item.CodingSchemeDesignator == "DCM" and item.CodeMeaning for item in written)


def _cold_caches() -> None:
    """Forget what the de-identification caches learned from earlier instances."""
    from bridge.deid import dates, scrub

    for cached in (scrub._scrub_cached, scrub._tokens_of_cached, dates.shift_da, dates.shift_dt):
        cached.cache_clear()


def test_what_one_instance_teaches_the_engine_changes_no_other_instances_result(tmp_path):
    """One engine de-identifies two patients' studies, one after the other (their descriptions,
    dates and UIDs repeat from instance to instance: they are answered from memory). Each file
    and each recorded result is the one a fresh engine gives for that instance alone."""
    first = make_study(tmp_path / "a", 3, seed=1)
    second = make_study(
        tmp_path / "b",
        3,
        seed=2,
        patient=PlantedPatient("OTHERFAMILY", "OTHERGIVEN", "PID-1234567", "ISSUER-B", "19700102"),
        accession="ACC-OTHER-1",
        study_date="20230105",
    )

    def result(engine: Deidentifier, path: Path) -> tuple[bytes, dict[str, object]]:
        r = engine.deidentify_file(path)
        buf = BytesIO()
        write_result(r, buf)
        return buf.getvalue(), {k: v for k, v in vars(r).items() if k != "dataset"}

    warm = Deidentifier(build_profile(), Pseudonymizer(SECRET), "test method")
    paths = [*first.paths, *second.paths, *first.paths]
    learned = [result(warm, p) for p in paths]
    for path, got in zip(paths, learned, strict=True):
        _cold_caches()
        alone = result(Deidentifier(build_profile(), Pseudonymizer(SECRET), "test method"), path)
        assert got == alone, path
    planted = [*first.identity, *second.identity]
    for data, _ in learned:
        assert not leaks(dcmread(BytesIO(data)), planted)
