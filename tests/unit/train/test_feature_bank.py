"""The feature bank: what it stores, where, when it is reused, and how epochs draw from it."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from dogbreed.core.errors import ConfigError
from dogbreed.core.preprocess import eval_input
from dogbreed.train import feature_bank
from dogbreed.train.config import TrainConfig
from dogbreed.train.data import load_splits
from dogbreed.train.distributed import Dist
from dogbreed.train.loop import Runtime
from dogbreed.train.models import build_model
from dogbreed.train.synth import synthesize
from support.train import config

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bank-data")
    synthesize(root, classes=2, per_class=8, seed=3)  # 6 train, 1 valid, 1 test per class
    return root


def bank_for(cfg: TrainConfig):
    torch.manual_seed(0)
    model = build_model(cfg.arch, 2, "none", frozen=True)  # frozen random: fine for plumbing
    splits = load_splits(cfg.train_dir, cfg.valid_dir, cfg.test_dir)
    rt = Runtime(cfg, Dist(), CPU)
    return feature_bank.load_or_build(rt, model, splits, workers=0), model, splits, rt


def test_auto_and_on_use_a_bank_only_for_a_frozen_backbone():
    assert feature_bank.wanted("auto", frozen=True)
    assert not feature_bank.wanted("auto", frozen=False)
    assert not feature_bank.wanted("off", frozen=True)
    assert feature_bank.wanted("on", frozen=True)
    with pytest.raises(ConfigError, match="needs a frozen backbone"):
        feature_bank.wanted("on", frozen=False)


def test_the_bank_lives_beside_the_checkpoint_directory_not_in_it(tmp_path):
    where = feature_bank.location(tmp_path / "opt" / "ml" / "checkpoints")
    assert where == (tmp_path / "opt" / "ml" / "feature-bank").resolve()


def test_a_bank_holds_half_precision_views_and_the_eval_features(data, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cfg = config(data, tmp_path)
    bank, model, splits, _ = bank_for(cfg)
    assert bank.train.features.shape == (12, 2, 512)  # 12 images x 2 views x F
    assert bank.train.features.dtype == torch.float16
    assert sorted(bank.train.targets.tolist()) == [0] * 6 + [1] * 6
    assert bank.valid.features.shape == (2, 512) and bank.test.features.shape == (2, 512)
    # Two random crops of one image are two different feature vectors.
    assert not torch.equal(bank.train.features[:, 0], bank.train.features[:, 1])
    # Evaluation features are the backbone's on the evaluation transform, in fp16.
    model.eval()
    x = torch.stack([torch.from_numpy(eval_input(p)) for p, _ in splits.valid])
    expected = model.features(x).to(torch.float16)
    order = np.argsort(bank.valid.targets.numpy())
    torch.testing.assert_close(bank.valid.features[order], expected, atol=2e-3, rtol=1e-2)
    assert "feature bank encoded" in caplog.text


def test_a_second_run_loads_the_kept_bank_and_a_changed_setting_encodes_anew(
    data, tmp_path, caplog
):
    caplog.set_level(logging.INFO)
    cfg = config(data, tmp_path)
    first, *_ = bank_for(cfg)
    caplog.clear()
    again, *_ = bank_for(cfg)
    assert "feature bank loaded" in caplog.text
    assert torch.equal(first.train.features, again.train.features)
    kept = list(feature_bank.location(cfg.checkpoint_dir).iterdir())
    assert len(kept) == 1 and not (cfg.checkpoint_dir / "feature-bank").exists()
    for change in ({"views": 3}, {"seed": 1}):
        caplog.clear()
        bank_for(dataclasses.replace(cfg, **change))
        assert "feature bank encoded" in caplog.text
    assert len(list(feature_bank.location(cfg.checkpoint_dir).iterdir())) == 3


def test_a_corrupt_kept_bank_is_encoded_again(data, tmp_path, caplog):
    cfg = config(data, tmp_path)
    bank_for(cfg)
    (kept,) = feature_bank.location(cfg.checkpoint_dir).glob("*/rank0of1.pt")
    kept.write_bytes(b"not a bank")
    caplog.set_level(logging.INFO)
    bank, *_ = bank_for(cfg)
    assert "unreadable" in caplog.text and "feature bank encoded" in caplog.text
    assert bank.train.features.shape[0] == 12


def test_unreadable_images_are_left_out_and_counted(data, tmp_path):
    root = tmp_path / "data"
    synthesize(root, classes=2, per_class=8, seed=3)
    bad = sorted((root / "train").glob("*/*.jpg"))[0]
    bad.write_bytes(bad.read_bytes()[:300])
    bank, *_ = bank_for(config(root, tmp_path))
    assert bank.train.dropped == 1 and bank.train.features.shape[0] == 11


def test_epoch_order_is_deterministic_per_epoch_and_pads_a_short_shard():
    features = torch.zeros(5, 3, 8, dtype=torch.float16)
    split = feature_bank.Split(features, torch.zeros(5, dtype=torch.long), 0)
    bank = feature_bank.FeatureBank(split, split, None, steps_images=7)  # another rank has 7
    rows, views = feature_bank.epoch_order(bank, seed=0, rank=0, epoch=1)
    again = feature_bank.epoch_order(bank, seed=0, rank=0, epoch=1)
    assert torch.equal(rows, again[0]) and torch.equal(views, again[1])
    assert len(rows) == 7 and set(rows.tolist()) == set(range(5))
    assert views.min() >= 0 and views.max() < 3
    other_rows, other_views = feature_bank.epoch_order(bank, seed=0, rank=0, epoch=2)
    assert not (torch.equal(rows, other_rows) and torch.equal(views, other_views))


def test_an_epoch_from_the_bank_trains_the_head(data, tmp_path):
    cfg = config(data, tmp_path, lr=0.01)
    bank, model, _, rt = bank_for(cfg)
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=cfg.lr)
    seen = feature_bank.Split(bank.train.features[:, 0], bank.train.targets, 0)  # view 0
    before = feature_bank.evaluate(rt, model.head, seen, 2).loss
    for epoch in range(1, 6):
        _, images, dropped, seconds = feature_bank.train_epoch(
            rt, model.head, bank, optimizer, epoch
        )
        assert images == 12 and dropped == 0 and seconds > 0
    after = feature_bank.evaluate(rt, model.head, seen, 2).loss
    assert after < before


def test_a_bank_too_large_for_the_device_is_refused_before_encoding(data, tmp_path):
    cfg = config(data, tmp_path)
    splits = load_splits(cfg.train_dir, cfg.valid_dir, cfg.test_dir)
    rt = Runtime(cfg, Dist(), CPU)
    assert feature_bank.planned_bytes(rt, splits, 512) == (12 * 2 + 2 + 2) * (512 * 2 + 8)
    huge = Runtime(dataclasses.replace(cfg, views=10**9), Dist(), CPU)
    with pytest.raises(ConfigError, match="fewer --views"):
        feature_bank.check_fits(huge, splits, 512)
