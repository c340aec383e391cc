"""Checkpoints: every RNG restored exactly, and loading never runs code from the file."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from dogbreed.core.errors import ConfigError
from dogbreed.train import checkpoint


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_rng_state_round_trips_through_a_safe_load(tmp_path):
    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    payload = {"model": {"w": torch.ones(2)}, "rng": checkpoint.rng_state(), "state": {"epoch": 1}}
    checkpoint.save(tmp_path / checkpoint.LAST, payload)
    expected = draws()
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    loaded = checkpoint.load(tmp_path / checkpoint.LAST)
    checkpoint.set_rng_state(loaded["rng"])
    assert draws() == expected
    assert not list(tmp_path.glob("*.tmp"))  # written through a rename


class Planted:
    """A pickle that would create a file if it were ever unpickled."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_a_checkpoint_that_carries_code_is_refused_without_running_it(tmp_path):
    target = tmp_path / "ran"
    torch.save({"model": Planted(str(target))}, tmp_path / checkpoint.LAST)
    with pytest.raises(ConfigError, match="cannot be read safely"):
        checkpoint.load(tmp_path / checkpoint.LAST)
    assert not target.exists()


@pytest.mark.parametrize("content", [b"", b"garbage", b"PK\x03\x04 truncated zip"])
def test_a_corrupt_checkpoint_is_one_clear_error(tmp_path, content):
    (tmp_path / checkpoint.LAST).write_bytes(content)
    with pytest.raises(ConfigError, match="delete it"):
        checkpoint.load(tmp_path / checkpoint.LAST)


def test_a_foreign_file_is_not_taken_for_a_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / checkpoint.LAST)
    with pytest.raises(ConfigError, match="not a dogbreed checkpoint"):
        checkpoint.load(tmp_path / checkpoint.LAST)
    assert checkpoint.load(tmp_path / "missing.pt") is None


def test_a_checkpoint_from_the_previous_release_still_resumes(tmp_path):
    """Before the RNG states were converted, numpy's was saved as an array: it must load."""
    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    old_rng = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    torch.save({"model": {"w": torch.ones(2)}, "rng": old_rng}, tmp_path / checkpoint.LAST)
    expected = draws()
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    checkpoint.set_rng_state(checkpoint.load(tmp_path / checkpoint.LAST)["rng"])
    assert draws() == expected
