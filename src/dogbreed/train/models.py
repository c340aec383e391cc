"""Model factory: a torchvision backbone with a new classifier head.

The backbone's own last Linear layer (ResNet `fc`, MobileNet/EfficientNet
`classifier[-1]`) is replaced by Identity, so `backbone(x)` returns pooled
features (N, F) and `head` maps them to (N, classes).
"""

from __future__ import annotations

import copy
import urllib.error
from collections import Counter
from pathlib import Path

import torch
import torch.fx
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from dogbreed.core.errors import ConfigError, ModelError

COMMON_ARCHS = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_large", "efficientnet_b0")


class Classifier(nn.Module):
    """backbone -> features (N, F) -> head -> logits (N, classes)."""

    def __init__(self, backbone: nn.Module, features: int, classes: int, frozen: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(features, classes)
        self.frozen = frozen
        # Set by speed_up_frozen_backbone(); kept out of the module tree on purpose.
        object.__setattr__(self, "_fast_backbone", None)
        if frozen:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.frozen:  # a frozen backbone keeps its BatchNorm statistics
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled features (N, F) of images (N, 3, H, W)."""
        if self.frozen:
            # No activations kept for a backbone that gets no gradient.
            with torch.no_grad():
                fast = self._fast_backbone
                return (fast if fast is not None else self.backbone)(x)
        return self.backbone(x)

    def speed_up_frozen_backbone(
        self, device: torch.device, bf16: bool = False, compile: bool = False
    ) -> None:
        """A frozen backbone only infers, so run it as inference code.

        With `compile`: torch.compile'd (any device). Else on CPU: an eager
        channels-last copy with BatchNorm folded into the convolutions
        (FoldedBackbone), in bf16 weights when `bf16`. ResNet-50 forward at
        batch 16 on 2 cores of an AVX512-BF16 CPU: 15 images/s as it is, 21
        folded in fp32, 42 folded in bf16 (as fast as the TorchScript-frozen
        copy this replaces). On a GPU the backbone runs as it is, under the
        loop's autocast. Call after the weights are final (loaded or
        restored); the copy is not part of state_dict, so exports and
        checkpoints are unchanged.
        """
        if not self.frozen:
            return
        if compile:
            object.__setattr__(self, "_fast_backbone", torch.compile(self.backbone))
            return
        if device.type != "cpu":
            return
        dtype = torch.bfloat16 if bf16 else torch.float32
        object.__setattr__(self, "_fast_backbone", FoldedBackbone(self.backbone, dtype))

    def drop_fast_backbone(self) -> None:
        """Back to the plain backbone (exporters need the module, not the inference copy)."""
        object.__setattr__(self, "_fast_backbone", None)


class FoldedBackbone(nn.Module):
    """An inference copy of a frozen backbone: (N, 3, H, W) -> features (N, F) in fp32.

    Each BatchNorm is folded into the convolution before it (one op instead
    of two), the weights are channels-last (oneDNN's fastest convolution
    layout on CPU) in `dtype`. It computes in its own dtype, with the loop's
    autocast off inside. A copy: the backbone's own weights and state_dict
    stay as they are.
    """

    def __init__(self, backbone: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        # Fold in fp32 (scale = gamma / sqrt(var + eps)), then cast: bf16 rounds once.
        net = fold_batchnorm(copy.deepcopy(backbone).float().eval())
        self.net = net.to(dtype=dtype, memory_format=torch.channels_last).requires_grad_(False)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # no_grad, not inference_mode: the head saves these features for its
        # backward, which inference tensors do not allow.
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            features = self.net(x.to(self.dtype).contiguous(memory_format=torch.channels_last))
        return features.float()


_FOLDABLE = ((nn.Conv1d, nn.BatchNorm1d), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold each eval-mode BatchNorm into the convolution that alone feeds it, in place.

    The data flow comes from a torch.fx trace (module order does not give
    it); the model stays an eager module with the convolutions replaced by
    folded ones and the BatchNorms by Identity. A model fx cannot trace is
    returned as it is: slower, still exact.
    """
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # fx raises several types on Python control flow
        return model
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    for node in graph.nodes:
        source = node.args[0] if node.op == "call_module" and node.args else None
        if isinstance(source, torch.fx.Node) and _foldable(source, node, modules, calls):
            conv, bn = modules[source.target], modules[node.target]
            _replace(model, source.target, fuse_conv_bn_eval(conv, bn))
            _replace(model, node.target, nn.Identity())
    return model


def _foldable(
    source: torch.fx.Node, node: torch.fx.Node, modules: dict[str, nn.Module], calls: Counter
) -> bool:
    """Whether `node` is a BatchNorm with running statistics fed by a convolution alone."""
    if source.op != "call_module":
        return False
    conv, bn = modules[source.target], modules[node.target]
    pair = any(type(conv) is c and type(bn) is b for c, b in _FOLDABLE)
    return (
        pair
        and bn.running_mean is not None
        and not (conv.training or bn.training)
        # Folding changes the convolution's output and drops the BatchNorm: neither
        # may be used anywhere else.
        and len(source.users) == 1
        and calls[source.target] == 1
        and calls[node.target] == 1
    )


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def available_archs() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _last_linear(model: nn.Module) -> str:
    """The name of the model's last nn.Linear: its classifier."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise ModelError("backbone has no Linear classifier to replace")
    return last


def _strip_last_linear(model: nn.Module) -> int:
    """Replace the model's last nn.Linear by Identity; return its in_features."""
    last = _last_linear(model)
    parent_name, _, child = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    features = getattr(parent, child).in_features
    setattr(parent, child, nn.Identity())
    return features


def _imagenet_weights(arch: str):
    try:
        return torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError) as exc:
        raise ModelError(f"no ImageNet weights known for {arch}") from exc


def _load_backbone_file(model: nn.Module, path: Path) -> None:
    """Load a torchvision-format state dict, ignoring the original classifier."""
    if not path.is_file():
        raise ConfigError(f"--weights {path}: no such file (use 'imagenet', 'none' or a file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"cannot read weights file {path}: {exc}") from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    # A dogbreed model.pth: take its backbone part.
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    own = model.state_dict()
    kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    # The classifier is replaced anyway: a dogbreed model.pth has none (Identity there).
    classifier = _last_linear(model) + "."
    missing = [k for k in own if k not in kept and not k.startswith(classifier)]
    if missing:
        raise ModelError(
            f"weights file {path} does not fit this backbone: {len(missing)} tensors missing "
            f"or of another shape (first: {missing[0]}); check --arch"
        )
    model.load_state_dict(kept, strict=False)  # strict but for the classifier, checked above


def build_model(arch: str, classes: int, weights: str = "none", frozen: bool = True) -> Classifier:
    """A Classifier for `classes` classes on torchvision backbone `arch`."""
    if arch not in available_archs():
        raise ConfigError(
            f"unknown arch '{arch}' (try one of: {', '.join(COMMON_ARCHS)}; "
            "any torchvision classification model name works)"
        )
    tv_weights = _imagenet_weights(arch) if weights == "imagenet" else None
    try:
        backbone = torchvision.models.get_model(arch, weights=tv_weights)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise ModelError(
            f"cannot download ImageNet weights for {arch} ({exc.__class__.__name__}: "
            f"{str(exc)[:120]}); with no network, give a local copy of the torchvision "
            "weights or none: --weights FILE|none (the hyperparameter 'weights'; "
            "dogbreed local train --hp weights=none)"
        ) from None
    if weights not in ("imagenet", "none"):
        _load_backbone_file(backbone, Path(weights))
    features = _strip_last_linear(backbone)
    return Classifier(backbone, features, classes, frozen)


def param_groups(model: Classifier, lr: float, backbone_lr_scale: float) -> list[dict]:
    """Optimiser groups: the head at lr; a trained backbone at lr x scale."""
    groups = [{"params": list(model.head.parameters()), "lr": lr}]
    if not model.frozen:
        groups.append({"params": list(model.backbone.parameters()), "lr": lr * backbone_lr_scale})
    return groups
