"""The course's endpoint handler (inference2.py), re-implemented for comparison.

Torch eager under no_grad, PIL + torchvision `Resize((224, 224))` + `ToTensor`
(no normalisation, as the course had it), raw logits back as JSON. It loads the
same model.pth as our server (backbone + linear head) so both serve one set of
weights. The course's URL fetching is left out: benchmarks send image bytes.
Served by the same MMS stack (`dogbreed serve` with this module as the handler).
"""

from __future__ import annotations

import io
import json
import os

import torch
from PIL import Image
from torch import nn
from torchvision import models, transforms

_model = None
_transform = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor()])


def _net(model_dir: str) -> nn.Module:
    with open(os.path.join(model_dir, "metadata.json")) as fh:
        meta = json.load(fh)
    state = torch.load(os.path.join(model_dir, "model.pth"), map_location="cpu")
    net = getattr(models, meta["arch"])(weights=None)
    net.fc = nn.Linear(net.fc.in_features, meta["num_classes"])
    renamed = {
        k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")
    }
    renamed.update(
        {"fc." + k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
    )
    net.load_state_dict(renamed)
    return net.eval()


def handle(data, context):
    global _model
    if data is None:
        _model = _net(context.system_properties["model_dir"])
        return None
    image = Image.open(io.BytesIO(data[0]["body"])).convert("RGB")
    with torch.no_grad():
        logits = _model(_transform(image).unsqueeze(0))
    context.set_response_content_type(0, "application/json")
    return [json.dumps(logits.tolist())]
