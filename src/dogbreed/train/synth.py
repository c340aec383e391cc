"""A learnable synthetic stand-in for the dogImages set.

Each class has its own hue, shape and stripe frequency; every image adds random
size, position, scale, background, colour jitter and noise. A CNN learns it in a
few epochs, which is what tests and the demo need; the tree is laid out like
dogImages (`train/001.Affenpinscher/...jpg`) and is the same for the same seed.
"""

from __future__ import annotations

import colorsys
import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dogbreed.core.errors import ConfigError

# The first breeds of the 133-class dogImages set, in its order.
BREEDS = (
    "Affenpinscher Afghan_hound Airedale_terrier Akita Alaskan_malamute American_eskimo_dog "
    "American_foxhound American_staffordshire_terrier American_water_spaniel "
    "Anatolian_shepherd_dog Australian_cattle_dog Australian_shepherd Australian_terrier "
    "Basenji Basset_hound Beagle Bearded_collie Beauceron Bedlington_terrier Belgian_malinois "
    "Belgian_sheepdog Belgian_tervuren Bernese_mountain_dog Bichon_frise "
    "Black_and_tan_coonhound Black_russian_terrier Bloodhound Bluetick_coonhound Border_collie "
    "Border_terrier Borzoi Boston_terrier Bouvier_des_flandres Boxer Boykin_spaniel Briard "
    "Brittany Brussels_griffon Bull_terrier Bulldog Bullmastiff"
).split()
SPLITS = {"train": 0.8, "valid": 0.1, "test": 0.1}
SHAPES = ("ellipse", "rectangle", "triangle", "diamond", "ring", "cross")


def class_folder(index: int) -> str:
    """Folder name of class `index` (0-based): '001.Affenpinscher', '042.Breed_042'."""
    name = BREEDS[index] if index < len(BREEDS) else f"Breed_{index + 1:03d}"
    return f"{index + 1:03d}.{name}"


def split_counts(per_class: int) -> dict[str, int]:
    """Images per class in each split: 80/10/10, at least one in valid and test."""
    if per_class < 3:
        raise ConfigError(f"--per-class must be at least 3 (one per split), got {per_class}")
    valid = max(1, round(per_class * SPLITS["valid"]))
    test = max(1, round(per_class * SPLITS["test"]))
    return {"train": per_class - valid - test, "valid": valid, "test": test}


def _class_style(index: int, classes: int) -> dict:
    # Hue spread over the circle; shape and stripes vary on other strides so
    # that neighbouring classes differ in more than one cue.
    return {
        "hue": (index / classes) % 1.0,
        "shape": SHAPES[index % len(SHAPES)],
        "stripes": 3 + (index * 5) % 11,
        "angle": (index * 37) % 180,
    }


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        pts = [(0, -1), (0.87, 0.5), (-0.87, 0.5)]
    elif shape == "diamond":
        pts = [(0, -1), (0.7, 0), (0, 1), (-0.7, 0)]
    else:  # cross
        a, b = 0.3, 1.0
        pts = [
            (-a, -b),
            (a, -b),
            (a, -a),
            (b, -a),
            (b, a),
            (a, a),
            (a, b),
            (-a, b),
            (-a, a),
            (-b, a),
            (-b, -a),
            (-a, -a),
        ]
    return [(cx + x * r, cy + y * r) for x, y in pts]


def render(index: int, classes: int, rng: np.random.Generator) -> Image.Image:
    """One RGB image of class `index`."""
    style = _class_style(index, classes)
    w, h = int(rng.integers(220, 520)), int(rng.integers(200, 420))
    bg = tuple(int(v) for v in rng.integers(60, 200, size=3))
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)

    hue = (style["hue"] + rng.normal(0, 0.02)) % 1.0
    sat, val = rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)
    fg = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, sat, val))
    r = min(w, h) * rng.uniform(0.3, 0.48)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    box = (cx - r, cy - r, cx + r, cy + r)
    if style["shape"] == "ellipse":
        draw.ellipse(box, fill=fg)
    elif style["shape"] == "rectangle":
        draw.rectangle(box, fill=fg)
    elif style["shape"] == "ring":
        draw.ellipse(box, outline=fg, width=max(4, int(r * 0.35)))
    else:
        draw.polygon(_polygon(style["shape"], cx, cy, r), fill=fg)

    # Class-specific stripes in the class colour over the whole image, so that
    # a random crop of background alone still carries the class (as fur does).
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = math.radians(style["angle"] + rng.normal(0, 8))
    phase = rng.uniform(0, 2 * math.pi)
    wave = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * style["stripes"] / 60 + phase)
    arr = np.asarray(img, dtype=np.float32)
    arr += 0.35 * wave[..., None] * (np.asarray(fg, np.float32) - np.asarray(bg, np.float32))
    arr += rng.normal(0, 10, size=arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 1.5))))
    return img


def synthesize(
    out: Path, classes: int, per_class: int, seed: int = 0, replace: bool = False
) -> dict[str, int]:
    """Write DIR/{train,valid,test}/NNN.Name/*.jpg; returns images written per split.

    A folder that already holds a set is refused (its other classes and images
    would silently join the new one) unless `replace`, which removes its splits first.
    """
    if classes < 2:
        raise ConfigError(f"--classes must be at least 2, got {classes}")
    counts = split_counts(per_class)
    held = [out / split for split in counts if (out / split).is_dir()]
    if held and not replace:
        raise ConfigError(
            f"{out} already holds a data set ({', '.join(p.name for p in held)}); "
            "choose an empty folder or pass --replace to remove it first"
        )
    for split in held:
        shutil.rmtree(split)
    written = dict.fromkeys(counts, 0)
    for c in range(classes):
        # One generator per class: adding classes does not change existing ones.
        rng = np.random.default_rng([seed, c])
        folder = class_folder(c)
        for split, n in counts.items():
            d = out / split / folder
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = render(c, classes, rng)
                name = f"{folder.split('.', 1)[1]}_{c + 1:03d}{i:03d}.jpg"
                img.save(d / name, format="JPEG", quality=int(rng.integers(75, 96)))
                written[split] += 1
    return written
