"""The model factory: backbones, heads, freezing and weight loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dogbreed.core.errors import ConfigError, ModelError
from dogbreed.train.models import COMMON_ARCHS, build_model, param_groups
from support.cli import run_cli


@pytest.mark.parametrize("arch", COMMON_ARCHS)
def test_common_archs_build_with_a_new_head(arch):
    model = build_model(arch, classes=7, weights="none", frozen=True).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 224, 224)).shape == (2, 7)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}


def test_frozen_backbone_keeps_its_statistics_in_train_mode():
    model = build_model("resnet18", classes=3, weights="none", frozen=True).train()
    before = model.backbone.bn1.running_mean.clone()
    model(torch.randn(4, 3, 64, 64)).sum().backward()
    assert torch.equal(before, model.backbone.bn1.running_mean)
    assert model.backbone.conv1.weight.grad is None and model.head.weight.grad is not None


def test_unfrozen_backbone_gets_the_lower_learning_rate():
    model = build_model("resnet18", classes=3, weights="none", frozen=False)
    groups = param_groups(model, lr=1e-3, backbone_lr_scale=0.1)
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-4)]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_weights_file_loads_a_torchvision_state_dict(tmp_path):
    import torchvision

    source = torchvision.models.resnet18()
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    model = build_model("resnet18", classes=4, weights=str(tmp_path / "resnet18.pth"))
    assert torch.equal(model.backbone.conv1.weight, source.conv1.weight)
    with pytest.raises(ModelError, match="does not fit this backbone"):
        build_model("resnet34", classes=4, weights=str(tmp_path / "resnet18.pth"))


def test_a_trained_dogbreed_model_is_a_weights_file_for_the_next(tmp_path):
    # A model trained on one set, frozen as the backbone for another with other classes.
    trained = build_model("resnet18", classes=5, weights="none", frozen=False)
    torch.save(trained.state_dict(), tmp_path / "model.pth")  # no fc: Identity there
    model = build_model("resnet18", classes=3, weights=str(tmp_path / "model.pth"))
    assert model.frozen and model.head.out_features == 3
    for key, value in trained.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key


def test_unknown_arch():
    with pytest.raises(ConfigError, match="unknown arch 'vgg0'"):
        build_model("vgg0", classes=2)


def test_imagenet_weights_without_network_fail_in_one_line(tmp_path, tiny_data):
    env = {
        "TORCH_HOME": str(tmp_path / "empty"),
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }  # a closed loopback port: no network
    proc = run_cli(
        "train",
        "--data",
        tiny_data,
        "--arch",
        "resnet18",
        "--weights",
        "imagenet",
        "--model-dir",
        tmp_path / "m",
        env=env,
        timeout=120,
    )
    assert proc.returncode == 4
    error = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and "--weights FILE" in error[0]


def test_fast_frozen_backbone_gives_the_same_logits():
    model = build_model("resnet18", classes=3, weights="none", frozen=True).eval()
    keys = list(model.state_dict())
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        expected = model(x)
        model.speed_up_frozen_backbone(torch.device("cpu"))
        got = model(x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert list(model.state_dict()) == keys  # exports and checkpoints see the same model
    model.train()
    loss = model(x).sum()
    loss.backward()
    assert model.head.weight.grad is not None


def test_bf16_frozen_backbone_agrees_with_fp32():
    """bf16 features (8 bits of mantissa) still pick the same classes as fp32."""
    torch.manual_seed(0)
    model = build_model("resnet18", classes=10, weights="none", frozen=True).eval()
    x = torch.randn(8, 3, 224, 224)
    with torch.no_grad():
        expected = model(x)
        model.speed_up_frozen_backbone(torch.device("cpu"), bf16=True)
        got = model(x)
    assert got.dtype == torch.float32
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.75


def randomise_batchnorm(module: nn.Module) -> None:
    """Non-trivial statistics and affine weights: a fresh BatchNorm folds into a no-op."""
    for bn in module.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize(
    "arch,size", [("resnet18", 224), ("mobilenet_v3_large", 96), ("efficientnet_b0", 96)]
)
def test_folded_backbone_computes_the_plain_features(arch, size):
    torch.manual_seed(0)
    model = build_model(arch, classes=3, weights="none", frozen=True).eval()
    randomise_batchnorm(model.backbone)
    x = torch.randn(2, 3, size, size)
    model.speed_up_frozen_backbone(torch.device("cpu"))  # fp32
    fast = model._fast_backbone
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())  # all folded
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())  # a copy
    with torch.no_grad():
        expected = model.backbone(x)  # (2, F)
        got = fast(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()
