"""The header leak scorer on the synthetic planted study and the shared corpus: zero leaks."""

from __future__ import annotations

import pytest
from pydicom import dcmread

from bridge.deid.engine import Deidentifier
from bridge.deid.profile import build_profile
from bridge.deid.pseudonyms import Pseudonymizer
from bridge.deid.score import score
from bridge.sample import make_study
from conftest import CORPUS


def _pairs(paths, profile):
    engine = Deidentifier(build_profile(profile), Pseudonymizer(b"score-secret-0123456789"), "t")
    return [(dcmread(p), engine.deidentify(dcmread(p)).dataset) for p in paths]


@pytest.mark.parametrize("profile", ["basic", "reading"])
def test_synthetic_study_scores_clean(tmp_path, profile):
    study = make_study(tmp_path, 4, rows=8, columns=8)
    s = score(_pairs(study.paths, profile))
    assert s.files == 4 and s.clean, s.report()
    # The scorer does see identity: originals scored against themselves fail everywhere.
    bad = score([(dcmread(p), dcmread(p)) for p in study.paths])
    assert not bad.clean and bad.header_leaks > 50 and bad.markers_missing == 4
    assert sum(bad.uids_unchanged.values()) == 16


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus/pseudo-phi is absent")
@pytest.mark.parametrize("profile", ["basic", "reading"])
def test_shared_corpus_scores_clean(profile):
    files = sorted(CORPUS.glob("*.dcm"))
    s = score(_pairs(files, profile))
    assert s.files == 71
    assert s.clean, s.report()
    bad = score([(dcmread(f), dcmread(f)) for f in files])
    assert bad.header_leaks > 71
