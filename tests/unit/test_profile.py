"""The profile table: faithful to PS3.15 Table E.1-1, resolved strictly, failing closed."""

from __future__ import annotations

import json

import pytest

from bridge.deid.profile import OPTION_COLUMNS, build_profile, load_table
from bridge.domain.errors import ProfileError
from conftest import REFERENCE

REF_OPTION = {
    "rtnSafePrivOpt": "retain_safe_private",
    "rtnUIDsOpt": "retain_uids",
    "rtnDevIdOpt": "retain_device_identity",
    "rtnInstIdOpt": "retain_institution_identity",
    "rtnPatCharsOpt": "retain_patient_characteristics",
    "rtnLongFullDatesOpt": "retain_long_full_dates",
    "rtnLongModifDatesOpt": "retain_long_modified_dates",
    "cleanDescOpt": "clean_descriptors",
    "cleanStructContOpt": "clean_structured_content",
    "cleanGraphOpt": "clean_graphics",
}


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/reference is absent")
def test_table_matches_the_standard_reference():
    ref = json.loads((REFERENCE / "ps3.15-table-e.1-1.json").read_text())
    ours = {r.tag.upper(): r for r in load_table(supplement=False)}
    differences = []
    for row in ref:
        tag = row["tag"].upper()
        mine = ours.pop(tag, None)
        if mine is None:
            differences.append(f"missing {tag} {row['name']}")
            continue
        if mine.basic != row["basicProfile"]:
            differences.append(f"{tag} basic: ours {mine.basic} vs {row['basicProfile']}")
        for ref_key, col in REF_OPTION.items():
            if mine.options.get(col, "") != row.get(ref_key, ""):
                differences.append(
                    f"{tag} {col}: ours {mine.options.get(col)} vs {row.get(ref_key)}"
                )
    differences += [f"extra {tag} {r.name}" for tag, r in ours.items()]
    assert differences == [], "\n".join(differences)


def test_basic_profile_resolution():
    p = build_profile()
    assert p.action_for(0x00100010) == "Z"  # Patient's Name
    assert p.action_for(0x00100020) == "D"  # Patient ID: Z/D -> D (pseudonym)
    assert p.action_for(0x0020000D) == "U"  # Study Instance UID
    assert p.action_for(0x00080080) == "D"  # Institution Name X/Z/D -> D
    assert p.action_for(0x00081140) == "U"  # Referenced Image Sequence X/Z/U* -> U
    assert p.action_for(0x00081030) == "X"  # Study Description
    assert p.action_for(0x60023000) == "X"  # Overlay Data, repeating group 60xx
    assert p.action_for(0x50100000 | 0x1234) == "X"  # Curve data 50xx,xxxx
    assert p.action_for(0x00280010) is None  # Rows: not listed, kept
    assert p.private == "X"


def test_unknown_action_fails_closed_naming_the_row():
    rows = load_table()
    text = "tag,name,basic," + ",".join(OPTION_COLUMNS) + "\n"
    text += '"(0010,0010)",Patient\'s Name,Q' + "," * len(OPTION_COLUMNS) + "\n"
    with pytest.raises(ProfileError) as err:
        build_profile(rows=load_table(text))
    assert "(0010,0010)" in str(err.value) and "Q" in str(err.value)
    assert rows  # the packaged table itself is fine


def test_unknown_option_and_unimplemented_clean_action_refuse():
    with pytest.raises(ProfileError):
        build_profile(options=["retain_everything"])
    with pytest.raises(ProfileError):
        build_profile("no-such-profile")
    reading = build_profile("reading")
    assert reading.action_for(0x00081030) == "C"  # Study Description: cleaned
    assert reading.action_for(0x00080020) == "C"  # Study Date: shifted
    assert reading.action_for(0x00101010) == "K"  # Patient's Age: kept
    assert reading.action_for(0x00100030) == "Z"  # Patient's Birth Date: still emptied
