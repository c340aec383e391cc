"""Phone photos: decoding at libjpeg's reduced DCT scale before the resize, against full decoding.

For each image, upscaled to a 12-megapixel phone photo (4032x3024, quality 90)
and also kept at 500x375, it prints the time of the evaluation transform
(decode + resize + crop + normalise) both ways, and the top-1 agreement of a
model on the two inputs:

    python bench/photo_decode.py --model-dir DIR [IMAGE ...]   (default: foolbox's photos)
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dogbreed.core.preprocess import eval_array, eval_input, open_image
from dogbreed.serve.predictor import Predictor

PHONE = (4032, 3024)
SMALL = (500, 375)


def jpeg_at(path: Path, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").resize(size, Image.Resampling.BICUBIC).save(
        buf, "JPEG", quality=90
    )
    return buf.getvalue()


def ms(fn, data: bytes, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(data)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def default_images() -> list[Path]:
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("no images given and foolbox (test photos) is not installed")
    return sorted((Path(next(iter(spec.submodule_search_locations))) / "data").glob("*.jpg"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="a trained model dir")
    parser.add_argument("images", nargs="*", type=Path, help="photos (default: foolbox's 20)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per image and way")
    args = parser.parse_args()
    model = Predictor(args.model_dir, threads=1)
    full_ms, reduced_ms, small_ms, agree = [], [], [], 0
    images = args.images or default_images()
    for path in images:
        phone, small = jpeg_at(path, PHONE), jpeg_at(path, SMALL)
        full_ms.append(ms(lambda d: eval_array(open_image(d)), phone, args.repeats))
        reduced_ms.append(ms(eval_input, phone, args.repeats))
        small_ms.append(ms(eval_input, small, args.repeats))
        batch = np.stack([eval_array(open_image(phone)), eval_input(phone)])
        top = model.probabilities(batch).argmax(axis=1)
        agree += int(top[0] == top[1])
    n = len(images)
    print(f"images={n} phone={PHONE[0]}x{PHONE[1]} small={SMALL[0]}x{SMALL[1]}")
    full, reduced, small = (statistics.median(x) for x in (full_ms, reduced_ms, small_ms))
    print(
        f"transform_ms_p50 phone_full={full:.1f} phone_reduced={reduced:.1f} small={small:.1f}\n"
        f"phone_reduced_over_small={reduced / small:.2f} phone_full_over_small={full / small:.2f} "
        f"top1_agreement={agree}/{n}"
    )


if __name__ == "__main__":
    main()
