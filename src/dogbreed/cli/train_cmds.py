"""`dogbreed data ...` and `dogbreed train`: make or fetch a dataset, train a model.

Parsers import only the core settings; the training stack (torch) is imported
when a command runs, so `dogbreed --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_data(sub) -> None:
    data = sub.add_parser(
        "data",
        help="make or download a dataset",
        description="Make a synthetic dataset or download dogImages.",
    )
    verbs = data.add_subparsers(dest="verb", required=True, metavar="{synth,fetch}")
    synth = verbs.add_parser(
        "synth",
        help="write a learnable synthetic dataset",
        description="Write DIR/{train,valid,test}/NNN.Name/*.jpg: class-dependent shapes, "
        "colours and stripes with noise and jitter, split 80/10/10.",
    )
    synth.add_argument("--out", type=Path, required=True, help="output directory")
    synth.add_argument("--classes", type=int, default=5, help="number of classes (default 5)")
    synth.add_argument(
        "--per-class", type=int, default=40, help="images per class over all splits (default 40)"
    )
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument(
        "--replace",
        action="store_true",
        help="remove the train/valid/test folders a previous set left in --out first "
        "(without it such a folder is refused: its classes would join the new set)",
    )

    fetch = verbs.add_parser(
        "fetch",
        help="download the 133-breed dogImages set",
        description="Download the dogImages archive (resumable, verified) and unpack it to "
        "DIR/{train,valid,test}.",
    )
    fetch.add_argument("--out", type=Path, required=True, help="output directory")
    fetch.add_argument("--url", default=None, help="archive URL (default: the course's copy)")
    fetch.add_argument("--sha256", default=None, help="expected SHA-256 of the archive")
    fetch.add_argument("--keep-archive", action="store_true", help="keep the zip after unpacking")
    fetch.add_argument(
        "--allow-http",
        action="store_true",
        help="accept a plain http:// URL (or a redirect to one); anyone on the way could "
        "swap the archive, so give --sha256 too",
    )
    fetch.add_argument(
        "--max-unpacked-gb",
        type=float,
        default=8,
        help="refuse an archive that would unpack to more than this (default 8 GiB)",
    )
    fetch.add_argument(
        "--max-members",
        type=int,
        default=100_000,
        help="refuse an archive with more members than this (default 100000)",
    )


def add_train(sub) -> None:
    from dogbreed.core.settings import SETTINGS, parse_bool

    train = sub.add_parser(
        "train",
        help="train a classifier (laptop, EC2 or SageMaker)",
        description="Train a breed classifier. Under SageMaker, settings also come from "
        "/opt/ml/input/config/hyperparameters.json and SM_* variables; flags win.",
    )
    paths = train.add_argument_group("paths")
    paths.add_argument(
        "--data",
        default=None,
        help="dataset root holding train/, valid/ and optionally test/ "
        "(SageMaker: the 'training' channel)",
    )
    paths.add_argument(
        "--model-dir",
        default=None,
        help="where model.pth, model.onnx and metadata.json go "
        "(SageMaker: /opt/ml/model; else artifacts/model)",
    )
    paths.add_argument(
        "--output-dir",
        default=None,
        help="metrics, plots and reports (SageMaker: /opt/ml/output/data; else artifacts/output)",
    )
    paths.add_argument(
        "--checkpoint-dir",
        default=None,
        help="per-epoch checkpoints, resumed from on start (SageMaker: "
        "/opt/ml/checkpoints; else artifacts/checkpoints)",
    )
    opts = train.add_argument_group("training")
    for key, setting in SETTINGS.items():
        shown = "" if setting.default is None else f" (default: {setting.default})"
        kwargs = {"default": None, "help": setting.help + shown}
        if setting.parse is parse_bool and setting.default is False:  # an on/off switch
            opts.add_argument(f"--{key}", action="store_const", const=True, **kwargs)
        else:
            opts.add_argument(f"--{key}", type=str, metavar=key.split("-")[-1].upper(), **kwargs)


def run_data(args: argparse.Namespace) -> int:
    if args.verb == "synth":
        from dogbreed.train.synth import synthesize

        counts = synthesize(args.out, args.classes, args.per_class, args.seed, args.replace)
    else:
        from dogbreed.train.fetch import DEFAULT_URL, Limits, fetch

        counts = fetch(
            args.out,
            args.url or DEFAULT_URL,
            args.sha256,
            args.keep_archive,
            progress=sys.stderr.isatty(),
            allow_http=args.allow_http,
            limits=Limits(int(args.max_unpacked_gb * 2**30), args.max_members),
        )
    print(f"{args.out}: " + ", ".join(f"{n} {split}" for split, n in counts.items()) + " images")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from dogbreed.core.settings import SETTINGS, parse_setting
    from dogbreed.train.config import resolve
    from dogbreed.train.run import run

    flags = {k.replace("_", "-"): v for k, v in vars(args).items()}
    for key in SETTINGS:
        if isinstance(flags.get(key), str):
            flags[key] = parse_setting(key, flags[key], "flag")
    run(resolve(flags))
    return 0
