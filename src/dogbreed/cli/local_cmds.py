"""`dogbreed local train|serve|transform`: the images on this machine, as SageMaker runs them.

Only the parsers live here; the Docker SDK is imported when a command runs.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path


def _hp(text: str) -> tuple[str, str]:
    """An argparse type: key=value, or a one-line usage error."""
    from dogbreed.core.errors import ConfigError
    from dogbreed.local.opt_ml import parse_hyperparameter

    try:
        return parse_hyperparameter(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _env(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or any(c.isspace() for c in key):
        raise argparse.ArgumentTypeError(f"--env {text!r}: expected NAME=VALUE")
    return key, value


def _run_id(text: str) -> str:
    from dogbreed.core.errors import ConfigError
    from dogbreed.local.docker_engine import check_run_id

    try:
        return check_run_id(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="image to run, e.g. dogbreed-train:latest")
    p.add_argument(
        "--network",
        choices=("auto", "bridge", "host"),
        default="auto",
        help="bridge: a private network for the run; host: nothing listens beyond "
        "loopback (the endpoint runs on host networking bound to 127.0.0.1; several "
        "training hosts, or GPUs, share one namespace with loopback alone and no internet; "
        "host names resolve to 127.0.0.1); auto (default): bridge where the engine allows "
        "one, else host",
    )
    p.add_argument(
        "--env",
        type=_env,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment variable for the container(s) (repeatable), "
        "e.g. DOGBREED_DIST_TIMEOUT=120",
    )
    p.add_argument(
        "--run-id",
        type=_run_id,
        default=None,
        help="name of the run: its network, container names and the label "
        "dogbreed.local=ID (default: a fresh random one)",
    )


def add_local(sub) -> None:
    local = sub.add_parser(
        "local",
        help="run the train or serve image on this machine as SageMaker does (Docker)",
        description="Run the images on this machine's Docker engine exactly as SageMaker "
        "runs them: a training job of one or more hosts, an endpoint, or a batch transform "
        "job. Ctrl-C stops and removes every container the command started.",
    )
    verbs = local.add_subparsers(
        dest="verb", required=True, metavar="{train,serve,transform}", parser_class=type(local)
    )
    train = verbs.add_parser(
        "train",
        help="a training job: one container per host, one distributed job",
        description="Lay out an /opt/ml tree per host under OUT/hosts/algo-i, run "
        "'IMAGE train' once per host, stream each host's log with its name in front, and "
        "pack algo-1's /opt/ml/model into OUT/model.tar.gz as SageMaker does; reports go "
        "to OUT/output/. Exits non-zero naming the host that failed and its reason.",
    )
    _common(train)
    train.add_argument("--hosts", type=int, default=1, help="instances (default 1)")
    train.add_argument(
        "--data",
        type=Path,
        required=True,
        help="dataset root holding train/ (valid/, test/): the 'training' channel, mounted "
        "read-only",
    )
    train.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output directory: model.tar.gz, output/ and hosts/ (replaced on each run)",
    )
    train.add_argument(
        "--hp",
        type=_hp,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="hyperparameter, written as a string like SageMaker does (repeatable; "
        "wins over --hp-json)",
    )
    train.add_argument(
        "--hp-json",
        default=None,
        metavar="JSON",
        help='hyperparameters as one JSON object, e.g. \'{"epochs": 2, "arch": "resnet18"}\'',
    )
    train.add_argument(
        "--gpus",
        action="store_true",
        help="give the containers the GPUs (several hosts: an equal share each)",
    )
    train.add_argument(
        "--max-run",
        type=float,
        default=86400,
        help="stop the job after this many seconds (default 86400)",
    )

    serve = verbs.add_parser(
        "serve",
        help="an endpoint: the serve image on a trained model",
        description="Run 'IMAGE serve' with the model read-only at /opt/ml/model, wait "
        "for GET /ping, print the URL and stream the log. Ctrl-C or SIGTERM stops and "
        "removes the container.",
    )
    _common(serve)
    serve.add_argument(
        "--model",
        type=Path,
        required=True,
        help="model directory or model.tar.gz (unpacked to a temporary directory)",
    )
    serve.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    serve.add_argument(
        "--wait",
        type=float,
        default=240,
        help="seconds to wait for /ping to answer (default 240, as SageMaker)",
    )

    _add_transform(verbs)


def _payload_mb(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number of MB, 1-100")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number, at least 1")
    return value


def _add_transform(verbs) -> None:
    transform = verbs.add_parser(
        "transform",
        help="a batch transform job: the serve image over a folder of files",
        description="Run 'IMAGE serve' as a SageMaker Batch Transform job runs it "
        "(SAGEMAKER_BATCH=True and the job's values in its environment), ask it GET "
        "/execution-parameters (the job's flags win, then its answer, then SageMaker's "
        "defaults: MultiRecord, 6 MB, 1 at a time), and send every file under --input to "
        "POST /invocations: whole (--split-type None) or split into lines (Line), one record "
        "a request (SingleRecord) or as many as fit the payload limit (MultiRecord). Writes "
        "OUTPUT/NAME.out per input file, OUTPUT/predictions.csv (file, breed, score, top-k) "
        "and OUTPUT/container.log; prints a summary with images/s. Exits non-zero naming "
        "each file that failed and why (SageMaker fails the whole job on one).",
    )
    _common(transform)
    transform.add_argument(
        "--model",
        type=Path,
        required=True,
        help="model directory or model.tar.gz (unpacked to a temporary directory)",
    )
    transform.add_argument(
        "--input", type=Path, required=True, help="folder of input files (every file, recursively)"
    )
    transform.add_argument(
        "--output",
        type=Path,
        required=True,
        help="folder for NAME.out per input, predictions.csv and container.log",
    )
    transform.add_argument(
        "--split-type",
        choices=("None", "Line"),
        default="None",
        help="None (default): each file is one record, e.g. a photo; Line: each line of a "
        'file is one record, e.g. JSON Lines of {"image": "<base64>"}',
    )
    transform.add_argument(
        "--batch-strategy",
        choices=("SingleRecord", "MultiRecord"),
        default=None,
        help="records per request with --split-type Line: one, or as many as fit "
        "--max-payload (default: the container's answer, else MultiRecord)",
    )
    transform.add_argument(
        "--max-payload",
        type=_payload_mb,
        default=None,
        metavar="MB",
        help="MaxPayloadInMB, 1-100: the largest request (default: the container's answer, else 6)",
    )
    transform.add_argument(
        "--max-concurrent",
        type=_positive,
        default=None,
        metavar="N",
        help="MaxConcurrentTransforms: requests at a time (default: the container's answer, "
        "else 1)",
    )
    transform.add_argument(
        "--content-type",
        default=None,
        help="Content-Type of every request (default: application/x-image for --split-type "
        "None, application/jsonlines for Line)",
    )
    transform.add_argument("--accept", default=None, help="Accept header of every request")
    transform.add_argument(
        "--assemble-with",
        choices=("None", "Line"),
        default=None,
        help="how a file's answers make NAME.out: Line (one a line; the default with "
        "--split-type Line) or None (concatenated)",
    )
    transform.add_argument(
        "--invocation-timeout",
        type=float,
        default=600,
        metavar="S",
        help="seconds one request may take (default 600, SageMaker's)",
    )
    transform.add_argument(
        "--wait",
        type=float,
        default=240,
        help="seconds to wait for /ping to answer (default 240, as SageMaker)",
    )


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_local(args: argparse.Namespace) -> int:
    # SIGTERM (a supervisor, `kill`) ends the command the way Ctrl-C does: containers go.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.verb == "train":
            return _train(args)
        if args.verb == "transform":
            return _transform(args)
        return _serve(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _train(args: argparse.Namespace) -> int:
    from dogbreed.local.opt_ml import hyperparameters
    from dogbreed.local.train import TrainJob, run_train

    job = TrainJob(
        image=args.image,
        hosts=args.hosts,
        data=args.data,
        out=args.out,
        hyperparameters=hyperparameters(args.hp_json, args.hp),
        gpus=args.gpus,
        network=args.network,
        env=dict(args.env),
        run_id=args.run_id or "",
        max_run_s=args.max_run,
    )
    run_train(job)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from dogbreed.local.serve import ServeJob, run_serve

    job = ServeJob(
        image=args.image,
        model=args.model,
        port=args.port,
        network=args.network,
        wait_s=args.wait,
        env=dict(args.env),
        run_id=args.run_id or "",
    )
    return run_serve(job)


def _transform(args: argparse.Namespace) -> int:
    from dogbreed.local.transform import TransformJob, run_transform

    job = TransformJob(
        image=args.image,
        model=args.model,
        input=args.input,
        output=args.output,
        split_type=args.split_type,
        batch_strategy=args.batch_strategy,
        max_payload_mb=args.max_payload,
        max_concurrent=args.max_concurrent,
        content_type=args.content_type,
        accept=args.accept,
        assemble_with=args.assemble_with,
        invocation_timeout_s=args.invocation_timeout,
        network=args.network,
        wait_s=args.wait,
        env=dict(args.env),
        run_id=args.run_id or "",
    )
    return run_transform(job)
