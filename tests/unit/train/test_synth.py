"""The synthetic dataset: layout and determinism."""

from __future__ import annotations

import pytest

from dogbreed.core.errors import ConfigError
from dogbreed.train.synth import class_folder, split_counts, synthesize


def test_synth_is_deterministic(tmp_path):
    synthesize(tmp_path / "a", classes=3, per_class=4, seed=7)
    synthesize(tmp_path / "b", classes=3, per_class=4, seed=7)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpg"))
    assert len(files_a) == 12
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    synthesize(tmp_path / "c", classes=3, per_class=4, seed=8)
    assert (tmp_path / "c" / files_a[0]).read_bytes() != (tmp_path / "a" / files_a[0]).read_bytes()
    assert sorted(p.name for p in (tmp_path / "a" / "train").iterdir()) == [
        "001.Affenpinscher",
        "002.Afghan_hound",
        "003.Airedale_terrier",
    ]


def test_layout_like_dog_images():
    assert class_folder(0) == "001.Affenpinscher" and class_folder(40) == "041.Bullmastiff"
    assert class_folder(132) == "133.Breed_133"
    assert split_counts(40) == {"train": 32, "valid": 4, "test": 4}
    with pytest.raises(ConfigError, match="at least 3"):
        split_counts(2)


def test_a_folder_with_an_earlier_set_is_refused_unless_replaced(tmp_path):
    """Five old classes must not silently join a new two-class set."""
    synthesize(tmp_path, classes=5, per_class=4, seed=0)
    with pytest.raises(ConfigError, match=r"already holds a data set.*--replace"):
        synthesize(tmp_path, classes=2, per_class=4, seed=0)
    assert len(list((tmp_path / "train").iterdir())) == 5  # left as it was
    synthesize(tmp_path, classes=2, per_class=4, seed=0, replace=True)
    for split in ("train", "valid", "test"):
        assert len(list((tmp_path / split).iterdir())) == 2
