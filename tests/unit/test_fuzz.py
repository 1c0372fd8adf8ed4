"""Fuzzing the receive and de-identification path with mutated real datasets (hypothesis).

Every input either passes or is refused with our own error (DatasetError at intake, DeidError
at de-identification: a failure status or quarantine with a reason), within a time bound (no
hang), and whatever passes can be written and read back, under a file name the bridge chose.
The default run tries BRIDGE_FUZZ_EXAMPLES (300) cases per property; `make fuzz` runs 10,000.
"""

from __future__ import annotations

import os
from io import BytesIO
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from bridge.deid.engine import Deidentifier, write_result
from bridge.deid.profile import build_profile
from bridge.deid.pseudonyms import Pseudonymizer
from bridge.domain.errors import DatasetError, DeidError
from bridge.pipeline.intake import read_header
from bridge.sample import make_study

EXAMPLES = int(os.environ.get("BRIDGE_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=3000,  # ms per case: a hang fails the test
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=EXAMPLES <= 300,  # CI: the same cases every run; `make fuzz`: new ones
)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> list[bytes]:
    study = make_study(tmp_path_factory.mktemp("fuzz"), 2, rows=16, columns=16)
    return [p.read_bytes() for p in study.paths]


@pytest.fixture(scope="module")
def engine() -> Deidentifier:
    return Deidentifier(build_profile("reading"), Pseudonymizer(b"f" * 32), "fuzz")


byte_edits = st.lists(
    st.tuples(
        st.sampled_from(["set", "insert", "delete", "truncate", "duplicate"]),
        st.integers(min_value=0, max_value=1 << 20),
        st.binary(min_size=1, max_size=64),
    ),
    min_size=1,
    max_size=8,
)


def _mutate_bytes(data: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    b = bytearray(data)
    for op, pos, chunk in edits:
        if not b:
            break
        i = pos % len(b)
        if op == "set":
            b[i : i + len(chunk)] = chunk
        elif op == "insert":
            b[i:i] = chunk
        elif op == "delete":
            del b[i : i + len(chunk)]
        elif op == "truncate":
            del b[max(132, i) :]
        else:
            b[i:i] = b[i : i + 256]
    return bytes(b)


weird_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "../../etc/passwd",
            "1.2.3/../../x",
            "\x00\x01",
            "é" * 70,
            "A" * 70000,
            "1" * 65,
            "",
            " ",
            "\\\\\\",
            "=?utf-8?",
            "ISO 2022 IR 87",
            "GB18030",
        ]
    ),
)
keywords = st.sampled_from(
    [
        "PatientName",
        "PatientID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "SOPClassUID",
        "StudyDate",
        "PatientBirthDate",
        "StudyTime",
        "AccessionNumber",
        "SpecificCharacterSet",
        "StudyDescription",
        "Modality",
        "PatientAge",
        "PatientWeight",
        "ReferencedSOPInstanceUID",
        "InstitutionName",
        "ContentDate",
        "NumberOfFrames",
    ]
)


def _deep(depth: int) -> Sequence:
    item = Dataset()
    item.PatientName = "NESTED^NAME"
    if depth:
        item.ReferencedStudySequence = _deep(depth - 1)
    return Sequence([item])


@st.composite
def dataset_edits(draw):  # type: ignore[no-untyped-def]
    return draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("set"), keywords, weird_text),
                st.tuples(st.just("delete"), keywords, st.just("")),
                st.tuples(st.just("deep"), st.just(""), st.integers(1, 60).map(str)),
            ),
            min_size=1,
            max_size=6,
        )
    )


def _mutate_dataset(data: bytes, edits) -> bytes:  # type: ignore[no-untyped-def]
    ds = dcmread(BytesIO(data))
    for op, kw, value in edits:
        if op == "delete":
            if kw in ds:
                delattr(ds, kw)
        elif op == "deep":
            ds.ReferencedStudySequence = _deep(int(value))
        else:
            try:
                setattr(ds, kw, value)
            except (ValueError, TypeError, OverflowError):
                continue
    out = BytesIO()
    try:
        ds.save_as(out, enforce_file_format=False)
    except Exception:  # noqa: BLE001 - pydicom itself refused to write it: not an input
        return data
    return out.getvalue()


def _check(path: Path, engine: Deidentifier) -> None:
    try:
        header = read_header(path)
    except DatasetError:
        return  # C-STORE answers 0xC210; nothing kept
    assert all(isinstance(v, str) for v in header.values())
    out = BytesIO()
    try:
        result = engine.deidentify_file(path)
        write_result(result, out)  # as the worker writes it
    except DeidError:
        return  # quarantined with a reason
    assert "/" not in result.pseudo_sop_uid and result.pseudo_sop_uid.startswith("2.25.")
    back = dcmread(BytesIO(out.getvalue()))
    assert str(back.SOPInstanceUID) == result.pseudo_sop_uid


@FUZZ
@given(which=st.integers(0, 1), edits=byte_edits)
def test_byte_mutations_fail_cleanly(tmp_path, seeds, engine, which, edits):
    path = tmp_path / "in.dcm"
    path.write_bytes(_mutate_bytes(seeds[which], edits))
    _check(path, engine)


@FUZZ
@given(which=st.integers(0, 1), edits=dataset_edits())
def test_dataset_mutations_fail_cleanly(tmp_path, seeds, engine, which, edits):
    path = tmp_path / "in.dcm"
    path.write_bytes(_mutate_dataset(seeds[which], edits))
    _check(path, engine)
