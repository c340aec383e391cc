"""`dogbreed aws train` and `dogbreed aws tune`: SageMaker training and tuning jobs.

A job is named after a digest of its request, so rerunning the same command finds
the job instead of starting a second one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from dogbreed.aws.config import digest
from dogbreed.aws.context import Ctx
from dogbreed.aws.policies import deployment_uri
from dogbreed.core import settings
from dogbreed.core.errors import AwsError

# The training script prints `name=value` pairs; SageMaker charts these.
METRIC_DEFINITIONS = [
    {"Name": name, "Regex": rf"{name}=([0-9.]+)"}
    for name in ("train_loss", "val_loss", "val_acc", "test_acc", "images_per_s")
] + [  # the int8 check, from its log line (train/quantize.py: "int8 model kept: ...")
    {"Name": "int8_val_acc", "Regex": r"int8 model kept: val_acc ([0-9.]+)"},
    {"Name": "int8_agreement", "Regex": r"int8 model kept: .* top-1 agreement ([0-9.]+)"},
]
CHECKPOINT_DIR = f"{settings.DEFAULT_BASE_DIR}/checkpoints"
ENDED = ("Completed", "Failed", "Stopped")
POLL_S = 15
# The tuner picks these; every other hyperparameter is static.
TUNED = ("lr", "batch-size", "batch_size")


@dataclass(frozen=True)
class TrainOptions:
    """One training job; None and empty values fall back to the config's `train` section."""

    image: str
    instance_type: str | None = None
    instance_count: int | None = None
    spot: bool = False
    hyperparameters: dict[str, str] = field(default_factory=dict)
    wait: bool = False
    timeout_s: float = 86400


@dataclass(frozen=True)
class TuneOptions:
    """One tuning job; None falls back to the config's `tune` section."""

    image: str
    max_jobs: int | None = None
    parallel_jobs: int | None = None


def resolve(ctx: Ctx, opts: TrainOptions) -> TrainOptions:
    """The job's settings: flags over the config's `train` section."""
    cfg = ctx.config["train"]
    return replace(
        opts,
        instance_type=opts.instance_type or cfg["instance_type"],
        instance_count=opts.instance_count or cfg["instance_count"],
        hyperparameters={**cfg["hyperparameters"], **opts.hyperparameters},
    )


def cmd_train(ctx: Ctx, opts: TrainOptions) -> str:
    request = training_job_request(ctx, resolve(ctx, opts))
    name = request["TrainingJobName"]
    if ctx.find("sagemaker", "describe_training_job", TrainingJobName=name):
        ctx.say(f"training job {name} exists (same request): unchanged")
    else:
        ctx.write("sagemaker", "create_training_job", **request)
        ctx.say(f"created training job {name}")
    if opts.wait and not ctx.dry_run:
        wait_training(ctx, name, opts.timeout_s)
    return name


def training_definition(ctx: Ctx, job: TrainOptions) -> dict[str, Any]:
    """The parts of CreateTrainingJob that a tuning job's definition shares."""
    cfg = ctx.config["train"]
    stopping = {"MaxRuntimeInSeconds": cfg["max_runtime_s"]}
    if job.spot:
        stopping["MaxWaitTimeInSeconds"] = cfg["max_wait_s"]
    # N's own prefixes, the only ones its execution role may write (policies.py).
    # Checkpoints are kept per set of hyperparameters: a rerun resumes its own.
    output = deployment_uri(ctx.config["output"], ctx.names.name)
    checkpoints = deployment_uri(ctx.config["checkpoints"], ctx.names.name)
    return {
        "AlgorithmSpecification": {
            "TrainingImage": job.image,
            "TrainingInputMode": "File",
            "MetricDefinitions": METRIC_DEFINITIONS,
        },
        "RoleArn": ctx.role_arn(ctx.names.sagemaker_role),
        "InputDataConfig": [
            {
                "ChannelName": "training",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": ctx.config["data"],
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
        ],
        "OutputDataConfig": {"S3OutputPath": output},
        "ResourceConfig": {
            "InstanceType": job.instance_type,
            "InstanceCount": job.instance_count,
            "VolumeSizeInGB": cfg["volume_gb"],
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": job.spot,
        "CheckpointConfig": {
            "S3Uri": f"{checkpoints}/{digest(job.hyperparameters)}",
            "LocalPath": CHECKPOINT_DIR,
        },
    }


def training_job_request(ctx: Ctx, job: TrainOptions) -> dict[str, Any]:
    spec = training_definition(ctx, job)
    spec["HyperParameters"] = {k: str(v) for k, v in job.hyperparameters.items()}
    return {
        "TrainingJobName": f"{ctx.names.name}-{digest(spec)}",
        **spec,
        "Tags": ctx.names.tags,
    }


def wait_training(ctx: Ctx, name: str, timeout_s: float) -> dict[str, Any]:
    """Print each status change until the job ends; its description once Completed,
    AwsError (with SageMaker's FailureReason) otherwise."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        job = ctx.read("sagemaker", "describe_training_job", TrainingJobName=name)
        status = (job["TrainingJobStatus"], job.get("SecondaryStatus"))
        if status != last:
            ctx.say(f"{name}: {status[0]} ({status[1]})")
            last = status
        if status[0] in ENDED:
            if status[0] != "Completed":
                raise AwsError(f"{name}: {status[0]}: {job.get('FailureReason', '')}")
            return job
        if time.monotonic() > deadline:
            raise AwsError(f"{name} still {status[0]} after {timeout_s:.0f}s")
        time.sleep(POLL_S)


def cmd_tune(ctx: Ctx, opts: TuneOptions) -> str:
    tune = ctx.config["tune"]
    request = tuning_job_request(
        ctx,
        opts.image,
        opts.max_jobs or tune["max_jobs"],
        opts.parallel_jobs or tune["parallel_jobs"],
    )
    name = request["HyperParameterTuningJobName"]
    if ctx.find(
        "sagemaker", "describe_hyper_parameter_tuning_job", HyperParameterTuningJobName=name
    ):
        ctx.say(f"tuning job {name} exists (same request): unchanged")
    else:
        ctx.write("sagemaker", "create_hyper_parameter_tuning_job", **request)
        ctx.say(f"created tuning job {name}")
    return name


def tuning_job_request(ctx: Ctx, image: str, max_jobs: int, parallel: int) -> dict[str, Any]:
    cfg, tune = ctx.config["train"], ctx.config["tune"]
    static = {k: str(v) for k, v in cfg["hyperparameters"].items() if k not in TUNED}
    job = TrainOptions(image, cfg["instance_type"], 1, hyperparameters=static)
    definition = training_definition(ctx, job)
    definition["StaticHyperParameters"] = static
    tuning = {
        "Strategy": "Bayesian",
        "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "val_acc"},
        "ResourceLimits": {
            "MaxNumberOfTrainingJobs": max_jobs,
            "MaxParallelTrainingJobs": parallel,
        },
        "ParameterRanges": {
            "ContinuousParameterRanges": [
                {
                    "Name": "lr",
                    "MinValue": str(tune["lr_min"]),
                    "MaxValue": str(tune["lr_max"]),
                    "ScalingType": "Logarithmic",
                }
            ],
            "CategoricalParameterRanges": [
                {"Name": "batch-size", "Values": [str(v) for v in tune["batch_sizes"]]}
            ],
            "IntegerParameterRanges": [],
        },
    }
    # Tuning job names are at most 32 characters.
    name = f"{ctx.names.name[:23]}-{digest([tuning, definition])}"
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": tuning,
        "TrainingJobDefinition": definition,
        "Tags": ctx.names.tags,
    }
