"""Batched crop + antialiased bilinear resize as separable matrix products.

RandomResizedCrop done one image at a time (device_data.augment) costs one
`F.interpolate` call per image, about three kernel launches each: ~768 a batch
of 256 on a GPU. When the batch is one (B, 3, S, S) tensor (every image decoded
once and kept at S x S), the crop and the resize of all of it are two batched
matrix products instead:

    out[b] = Wy[b] @ x[b] @ Wx[b]^T      Wy: (B, out, S)   x: (B, 3, S, S)   Wx: (B, out, S)

Each row of Wy (Wx) holds the weights one output row (column) takes from the
source rows (columns) inside its box: Pillow's antialiased bilinear filter, the
one `F.interpolate(mode="bilinear", antialias=True, align_corners=False)` uses.
For an integer box the result equals that call on the cropped image (a test
holds it to 1e-3 on the 0-255 scale).

Boxes may be fractional: a box drawn on the original image and mapped onto the
S x S grid (`scale_boxes`) rarely lands on whole pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dogbreed.core.preprocess import CROP  # the training crop's side, 224

# A row with no source pixel inside the image (a box wholly outside it) would
# divide by zero: it stays all zero instead.
MIN_ROW_SUM = 1e-12


def axis_weights(starts: torch.Tensor, lengths: torch.Tensor, size: int, out: int) -> torch.Tensor:
    """(B, out, size) float32: `W @ x` resamples box b of a `size`-pixel axis to `out` samples.

    starts, lengths: (B,) float, the boxes in source pixels. Pillow's (and torch's
    antialias) bilinear filter: scale = length / out; support = max(scale, 1);
    output j is centred at start + (j + 0.5) * scale; source pixel p (centre
    p + 0.5) weighs max(0, 1 - |p + 0.5 - centre| / support), counted only inside
    the box (floor(start) <= p < ceil(start + length)) and the axis (0 <= p < size);
    each row sums to 1. torch's window (xmin = int(centre - support + 0.5), xsize up
    to int(centre + support + 0.5)) holds exactly the pixels this tent can weigh
    above zero, so no window is needed here: pixels outside it get 0 from the tent.
    """
    device = starts.device
    starts = starts.to(torch.float32)
    lengths = lengths.to(torch.float32)
    scale = lengths / out  # (B,)
    support = scale.clamp_min(1.0)  # (B,)
    first = starts.floor()  # (B,) the box's first source pixel
    # Distances in box-relative coordinates, as torch computes them on the crop:
    # p + 0.5 - floor(start) is exact in float32 at any image size, where
    # p + 0.5 - centre in absolute coordinates would lose bits far from 0.
    # (B, size) source pixel centres and (out,) output centres in output samples
    pixel = torch.arange(0.5, size, device=device, dtype=torch.float32) - first[:, None]
    j = torch.arange(0.5, out, device=device, dtype=torch.float32)
    centre = (starts - first)[:, None] + j * scale[:, None]  # (B, out), box-relative
    dist = (pixel[:, None, :] - centre[:, :, None]).abs()  # (B, out, size)
    weights = (1.0 - dist / support[:, None, None]).clamp_min(0.0)  # (B, out, size)
    # Only the box's own pixels count (the crop's edge is a hard edge, as on a cut tensor).
    end = (starts + lengths).ceil() - first  # (B,) one past the box's last pixel, relative
    inside = (pixel > 0) & (pixel < end[:, None])  # (B, size)
    weights = weights * inside[:, None, :]
    return weights / weights.sum(-1, keepdim=True).clamp_min(MIN_ROW_SUM)


def _resample(x: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, out_h, out_w): wy (B, out_h, H) on rows, wx (B, out_w, W) on columns.

    Either order gives the same result; the cost differs. Rows first costs
    out_h * W * (H + out_w) multiply-adds per channel, columns first
    out_w * H * (W + out_h): the first product shrinks the axis it contracts, so
    contract the longer axis first. On the square cache they tie (columns first).
    """
    height, width = x.shape[-2:]
    rows_first = wy.shape[1] * width * (height + wx.shape[1])
    cols_first = wx.shape[1] * height * (width + wy.shape[1])
    if rows_first < cols_first:
        t = torch.einsum("boh,bchw->bcow", wy, x)  # (B, C, out_h, W)
        return torch.einsum("bcow,bpw->bcop", t, wx)  # (B, C, out_h, out_w)
    t = x @ wx.transpose(1, 2).unsqueeze(1)  # (B, C, H, out_w): broadcast over C, no copy
    return wy.unsqueeze(1) @ t  # (B, C, out_h, out_w)


def crop_resize(
    images: torch.Tensor,
    boxes: torch.Tensor,
    out: int = CROP,
    dtype: torch.dtype = torch.float32,
    flips: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, 3, H, W) uint8 or float, (B, 4) boxes -> (B, 3, out, out) float32 in [0, 255].

    flips (B,) bool mirrors those outputs left to right, folded into the column
    weights (reversed rows of wx): exact, and no second copy of the batch.

    boxes: (top, left, h, w) in source pixels, float or int, one per image. The
    products run in `dtype`; the weights are built in float32 either way. On a
    GPU, float16 or bfloat16 trade accuracy for speed: on noise, measured against
    float32, float16 is off by up to 0.18 levels, bfloat16 by up to 1.4 (mean 0.26), on the CPU.
    """
    if images.dim() != 4 or boxes.shape != (images.shape[0], 4):
        raise ValueError(
            f"want images (B, C, H, W) and boxes (B, 4), got {tuple(images.shape)}"
            f" and {tuple(boxes.shape)}"
        )
    height, width = images.shape[-2:]
    boxes = boxes.to(images.device, torch.float32)
    top, left, h, w = boxes.unbind(1)  # each (B,)
    if height == width:
        # The square cache: both axes' weights in one call, half the kernel launches.
        both = axis_weights(torch.cat([top, left]), torch.cat([h, w]), height, out)
        wy, wx = both.chunk(2)  # each (B, out, S)
    else:
        wy = axis_weights(top, h, height, out)  # (B, out, H)
        wx = axis_weights(left, w, width, out)  # (B, out, W)
    if flips is not None:
        wx = torch.where(flips.to(wx.device).view(-1, 1, 1), wx.flip(1), wx)
    x = images.to(dtype)
    return _resample(x, wy.to(dtype), wx.to(dtype)).float()


def scale_boxes(
    boxes: torch.Tensor,
    from_hw: torch.Tensor | Sequence[Sequence[int]],
    to_hw: tuple[int, int] | torch.Tensor,
) -> torch.Tensor:
    """(B, 4) (top, left, h, w) on images of sizes from_hw (B, 2) -> the same boxes on to_hw.

    The cache squashes each image to S x S, so a box scaled by S/H down and S/W
    across covers the same part of the picture. Returns float32, on boxes' device.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    from_hw = torch.as_tensor(from_hw, dtype=torch.float32, device=boxes.device)  # (B, 2)
    to_hw = torch.as_tensor(to_hw, dtype=torch.float32, device=boxes.device)  # (2,) or (B, 2)
    factor = to_hw / from_hw  # (B, 2): (S/H, S/W)
    return boxes * factor.repeat(1, 2)  # (top, left, h, w) * (S/H, S/W, S/H, S/W)
