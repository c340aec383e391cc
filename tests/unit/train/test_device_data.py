"""The device data pipeline: the parts that run anywhere are tested on the CPU here;
the CUDA decoder's own tests run where a GPU is present."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.transforms import functional as TF

from dogbreed.core.preprocess import IMAGENET_MEAN, IMAGENET_STD, eval_array, open_image
from dogbreed.train.device_data import (
    EncodedDataset,
    augment,
    collate_encoded,
    orient,
    prepare,
    sample_crop,
    sample_flip,
)
from dogbreed.train.device_loader import DeviceLoader

# One 8-bit level after ImageNet normalisation (Pillow rounds to uint8 after resizing).
ONE_LEVEL = 1.0 / 255 / min(IMAGENET_STD) + 1e-6


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def smooth(w: int, h: int) -> Image.Image:
    """A gradient with a corner mark: resampling differences stay small, orientation shows."""
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (w + h)], -1)
    arr[: h // 5, : w // 7] = (250, 10, 10)
    return Image.fromarray(arr.astype(np.uint8))


def jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("size", [(375, 500), (500, 375), (224, 224), (40, 900), (1000, 30)])
def test_crop_and_flip_draws_equal_torchvision(size):
    """Same seed, same boxes and flips as RandomResizedCrop + RandomHorizontalFlip."""
    height, width = size
    dummy = torch.empty(3, height, width)
    for seed in range(40):
        torch.manual_seed(seed)
        ours = (sample_crop(height, width), sample_flip())
        torch.manual_seed(seed)
        box = transforms.RandomResizedCrop.get_params(dummy, [0.08, 1.0], [3 / 4, 4 / 3])
        theirs = (tuple(box), bool(torch.rand(1) < 0.5))
        assert ours == theirs
        top, left, h, w = ours[0]
        assert top >= 0 and top + h <= height and left >= 0 and left + w <= width


def test_augment_is_torchvision_resized_crop_and_flip():
    img = torch.from_numpy(np.array(noise(300, 200))).permute(2, 0, 1)
    boxes = [(10, 20, 150, 120), (0, 0, 200, 300)]
    out = augment([img, img], boxes, torch.tensor([False, True]))
    for k, ((top, left, h, w), flip) in enumerate(zip(boxes, (False, True), strict=True)):
        expected = TF.resized_crop(img.float(), top, left, h, w, [224, 224], antialias=True)
        expected = expected.flip(-1) if flip else expected
        torch.testing.assert_close(out[k], expected, atol=1e-3, rtol=0)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pillow_exif_transpose(orientation):
    img = noise(7, 4, seed=orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.info["exif"] = exif.tobytes()
    img.getexif()[0x0112] = orientation
    expected = np.asarray(ImageOps.exif_transpose(img))
    got = orient(torch.from_numpy(np.array(img)).permute(2, 0, 1), orientation)
    np.testing.assert_array_equal(got.permute(1, 2, 0).numpy(), expected)


def test_encoded_samples_route_by_what_the_device_can_decode(tmp_path):
    rgba_png = io.BytesIO()
    Image.new("RGBA", (60, 40), (200, 30, 30, 128)).save(rgba_png, format="PNG")
    full = jpeg(smooth(64, 48))
    exif = Image.Exif()
    exif[0x0112] = 6
    # name: (file, sent as, upright (height, width))
    files = {
        "rgb": (full, "bytes", (48, 64)),
        "grey": (jpeg(smooth(64, 48).convert("L")), "bytes", (48, 64)),
        "rotated": (jpeg(smooth(64, 48), exif=exif.tobytes()), "bytes", (64, 48)),
        "png": (rgba_png.getvalue(), "pixels", (40, 60)),
        "cmyk": (jpeg(smooth(64, 48).convert("CMYK")), "pixels", (48, 64)),
        "truncated": (full[: len(full) // 2], None, None),
        "garbage": (b"not an image at all" * 20, None, None),
        "empty": (b"", None, None),
    }
    samples = [
        (write(tmp_path / f"{name}.img", f[0]), i) for i, (name, f) in enumerate(files.items())
    ]
    torch.manual_seed(0)
    ds = EncodedDataset(samples, train=True)
    for i, (name, (_, kind, size)) in enumerate(files.items()):
        sample = ds[i]
        if kind is None:
            assert sample is None, name
            continue
        assert sample.target == i
        assert (sample.data.dim() == 1) == (kind == "bytes"), name
        if kind == "pixels":
            assert tuple(sample.data.shape) == (*size, 3), name
        top, left, h, w = sample.box
        assert h > 0 and w > 0 and top + h <= size[0] and left + w <= size[1], name
    assert ds[2].orientation == 6 and ds[0].orientation == 1


def test_device_eval_transform_within_one_level_of_pillow(photos, e2e_data):
    files = [photos["bullmastiff"], photos["dalmatian"], *sorted(e2e_data.glob("test/*/*.jpg"))[:4]]
    ds = EncodedDataset([(p, 0) for p in files], train=False)
    batch = collate_encoded([ds[i] for i in range(len(ds))])
    images, _, dropped, cpu_decoded = prepare(batch, torch.device("cpu"), False, True)
    assert images.shape == (len(files), 3, 224, 224) and (dropped, cpu_decoded) == (0, 0)
    assert images.is_contiguous(memory_format=torch.channels_last)
    expected = np.stack([eval_array(open_image(p)) for p in files])
    np.testing.assert_allclose(images.numpy(), expected, atol=ONE_LEVEL, rtol=0)


def test_exif_rotated_jpeg_is_upright_like_the_cpu_path(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8
    path = write(tmp_path / "rot.jpg", jpeg(smooth(320, 240), exif=exif.tobytes()))
    ds = EncodedDataset([(path, 0)], train=False)
    images, *_ = prepare(collate_encoded([ds[0]]), torch.device("cpu"), False, False)
    expected = eval_array(open_image(path))  # Pillow: decode, exif_transpose, resize, crop
    # Two JPEG decoders may differ by a level or two; a wrong rotation differs by far more.
    assert np.abs(images[0].numpy() - expected).mean() < 0.02


def test_device_loader_batches_counts_and_order(tmp_path):
    files = []
    for i in range(10):
        data = jpeg(smooth(80 + i, 60))
        if i == 3:
            data = b"broken"
        if i == 6:
            buf = io.BytesIO()
            smooth(70, 50).save(buf, format="PNG")
            data = buf.getvalue()
        files.append((write(tmp_path / f"{i}.img", data), i % 3))
    loader = DataLoader(
        EncodedDataset(files, train=True), batch_size=4, num_workers=2, collate_fn=collate_encoded
    )
    device_loader = DeviceLoader(loader, torch.device("cpu"), train=True, channels_last=True)
    assert len(device_loader) == 3
    got = list(device_loader)
    assert [len(t) for _, t, _ in got] == [3, 4, 2] and sum(d for *_, d in got) == 1
    assert torch.cat([t for _, t, _ in got]).tolist() == [i % 3 for i in range(10) if i != 3]
    assert device_loader.cpu_decoded == 1  # the PNG
    for images, targets, _ in got:
        assert images.shape == (len(targets), 3, 224, 224) and images.dtype == torch.float32
        assert images.is_contiguous(memory_format=torch.channels_last)
        lo = (0 - max(IMAGENET_MEAN)) / min(IMAGENET_STD)
        hi = (1 - min(IMAGENET_MEAN)) / min(IMAGENET_STD)
        assert lo - 1e-4 <= images.min() and images.max() <= hi + 1e-4


def test_a_batch_crosses_from_the_worker_as_one_packed_tensor(tmp_path):
    buf = io.BytesIO()
    smooth(70, 50).save(buf, format="PNG")  # decoded in the worker: (H, W, 3) pixels
    files = [
        (write(tmp_path / "a.jpg", jpeg(smooth(80, 60))), 0),
        (write(tmp_path / "b.png", buf.getvalue()), 1),
        (write(tmp_path / "c.jpg", b"broken"), 2),
        (write(tmp_path / "d.jpg", jpeg(smooth(90, 40))), 2),
    ]
    ds = EncodedDataset(files, train=True)
    samples = [ds[i] for i in range(len(files))]
    batch = collate_encoded(samples)
    tensors = [v for v in batch if isinstance(v, torch.Tensor)]
    assert [t.dtype for t in tensors] == [torch.uint8, torch.long, torch.bool]  # one payload
    assert batch.dropped == 1 and batch.targets.tolist() == [0, 1, 2]
    good = [s for s in samples if s is not None]
    assert batch.shapes == [tuple(s.data.shape) for s in good]
    for view, sample in zip(batch.data, good, strict=True):
        assert torch.equal(view, sample.data)


def test_device_loader_stops_early_and_reraises(tmp_path):
    files = [(write(tmp_path / f"{i}.jpg", jpeg(smooth(64, 64))), 0) for i in range(12)]
    loader = DataLoader(
        EncodedDataset(files, train=False), batch_size=2, collate_fn=collate_encoded
    )
    device_loader = DeviceLoader(loader, torch.device("cpu"), train=False, channels_last=False)
    for n, _ in enumerate(device_loader):  # leaving early stops the producer thread
        if n == 1:
            break
    assert len(list(device_loader)) == 6  # and a new pass starts from scratch

    def broken(batch):
        raise ValueError("collate failed")

    bad = DeviceLoader(
        DataLoader(EncodedDataset(files, train=False), batch_size=2, collate_fn=broken),
        torch.device("cpu"),
        train=False,
        channels_last=False,
    )
    with pytest.raises(ValueError, match="collate failed"):
        list(bad)
