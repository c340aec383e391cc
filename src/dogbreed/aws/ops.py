"""`dogbreed aws ...`: the AWS side of a deployment, as idempotent commands.

Every resource name derives from the deployment name N. Rerunning a command
changes nothing when nothing changed (jobs, models and endpoint configs are named
after a digest of their request), and prints what it created or changed.
`--dry-run` prints the API requests instead of sending them.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dogbreed.aws import policies as iam
from dogbreed.core.errors import AwsError, ConfigError

CONFIG_FILE = "dogbreed-aws.json"
METRIC_DEFINITIONS = [
    {"Name": name, "Regex": rf"{name}=([0-9.]+)"}
    for name in ("train_loss", "val_loss", "val_acc", "test_acc", "images_per_s")
]
VARIANT = "AllTraffic"
ALIAS = "live"


def load_config(path: Path | None) -> dict[str, Any]:
    """The repo's defaults file (or --config FILE), merged over the built-in one."""
    builtin = json.loads((Path(__file__).parent / "defaults.json").read_text())
    candidates = [path] if path else [Path(CONFIG_FILE)]
    for candidate in candidates:
        if candidate and candidate.is_file():
            try:
                user = json.loads(candidate.read_text())
            except ValueError as exc:
                raise ConfigError(f"{candidate}: invalid JSON: {exc}") from None
            for key, value in user.items():
                if isinstance(value, dict):
                    builtin.setdefault(key, {}).update(value)
                else:
                    builtin[key] = value
        elif path:
            raise ConfigError(f"config file {path} does not exist")
    return builtin


def digest(obj: Any, n: int = 8) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:n]


@dataclass
class Names:
    """Every resource name of deployment N."""

    name: str

    @property
    def sagemaker_role(self) -> str:
        return f"{self.name}-sagemaker-execution"

    @property
    def lambda_role(self) -> str:
        return f"{self.name}-lambda"

    @property
    def endpoint(self) -> str:
        return self.name

    @property
    def function(self) -> str:
        return self.name

    @property
    def scaling_resource(self) -> str:
        return f"endpoint/{self.endpoint}/variant/{VARIANT}"

    @property
    def scaling_policy(self) -> str:
        return f"{self.name}-invocations-per-instance"

    @property
    def log_group(self) -> str:
        return f"/aws/lambda/{self.function}"

    def owns(self, resource: str) -> bool:
        """Models and endpoint configs this deployment made: N-<8 hex digits>."""
        prefix, _, tail = resource.rpartition("-")
        return prefix == self.name and len(tail) == 8 and all(c in "0123456789abcdef" for c in tail)


@dataclass
class Ctx:
    names: Names
    config: dict[str, Any]
    dry_run: bool = False
    out: Any = sys.stdout
    _session: Any = None
    _clients: dict[str, Any] = field(default_factory=dict)
    _identity: tuple[str, str] | None = None

    @property
    def session(self):
        if self._session is None:
            import boto3

            self._session = boto3.Session(region_name=self.config.get("region") or None)
        return self._session

    @property
    def region(self) -> str:
        region = self.session.region_name
        if not region:
            raise ConfigError(
                "no AWS region: set it in dogbreed-aws.json, AWS_REGION or `aws configure`"
            )
        return region

    @property
    def account(self) -> str:
        if self._identity is None:
            try:
                account = self.client("sts").get_caller_identity()["Account"]
            except Exception as exc:
                if not self.dry_run:
                    raise AwsError(f"cannot read the AWS account: {exc}") from None
                account = "123456789012"
            self._identity = (account, self.region)
        return self._identity[0]

    def client(self, service: str):
        if service not in self._clients:
            self._clients[service] = self.session.client(service)
        return self._clients[service]

    def say(self, message: str) -> None:
        # A dry run changes nothing: its messages tell what a real run would do.
        print(f"(dry run) {message}" if self.dry_run else message, file=self.out, flush=True)

    def read(self, service: str, op: str, missing: tuple[str, ...] = (), **params) -> Any:
        """A describe/get call; None when the resource is missing (or in a dry run)."""
        if self.dry_run:
            return None
        from botocore.exceptions import ClientError

        try:
            return getattr(self.client(service), op)(**params)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            message = exc.response.get("Error", {}).get("Message", "")
            if code in missing or any(
                m in message for m in ("not found", "does not exist", "Could not find")
            ):
                return None
            raise AwsError(f"{service} {op}: {code}: {message}") from None

    def write(self, service: str, op: str, **params) -> Any:
        """A call that changes something; printed instead of sent in a dry run."""
        if self.dry_run:
            shown = {
                k: ("<zip bytes>" if isinstance(v, bytes | bytearray) else v)
                for k, v in params.items()
            }
            if "Code" in shown and "ZipFile" in shown["Code"]:
                shown["Code"] = {"ZipFile": "<zip bytes>"}
            self.say(f"{service}.{op} {json.dumps(shown, sort_keys=True, default=str)}")
            return {}
        from botocore.exceptions import ClientError

        try:
            return getattr(self.client(service), op)(**params)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise AwsError(f"{service} {op}: {err.get('Code')}: {err.get('Message')}") from None

    def role_arn(self, role: str) -> str:
        return f"arn:aws:iam::{self.account}:role/{role}"


# ---- IAM ------------------------------------------------------------------------------------


def ensure_role(ctx: Ctx, role: str, service: str, policy: dict[str, Any]) -> None:
    trust = iam.trust_policy(service)
    found = ctx.read("iam", "get_role", ("NoSuchEntity",), RoleName=role)
    if found is None:
        ctx.write(
            "iam",
            "create_role",
            RoleName=role,
            AssumeRolePolicyDocument=json.dumps(trust),
            Description=f"dogbreed {ctx.names.name}: {service}",
            Tags=[{"Key": "dogbreed:name", "Value": ctx.names.name}],
        )
        ctx.say(f"created role {role}")
    elif _doc(found["Role"]["AssumeRolePolicyDocument"]) != trust:
        ctx.write(
            "iam", "update_assume_role_policy", RoleName=role, PolicyDocument=json.dumps(trust)
        )
        ctx.say(f"updated trust policy of {role}")
    current = ctx.read("iam", "get_role_policy", ("NoSuchEntity",), RoleName=role, PolicyName=role)
    if current is None or _doc(current["PolicyDocument"]) != policy:
        ctx.write(
            "iam",
            "put_role_policy",
            RoleName=role,
            PolicyName=role,
            PolicyDocument=json.dumps(policy),
        )
        ctx.say(f"{'set' if current is None else 'updated'} inline policy {role} on {role}")
    else:
        ctx.say(f"role {role} unchanged")


def _doc(value: Any) -> Any:
    """IAM answers policy documents URL-encoded JSON, or already parsed."""
    if isinstance(value, str):
        import urllib.parse

        return json.loads(urllib.parse.unquote(value))
    return value


def policies(ctx: Ctx) -> dict[str, dict[str, Any]]:
    cfg, n = ctx.config, ctx.names
    return {
        n.sagemaker_role: iam.sagemaker_policy(
            ctx.region,
            ctx.account,
            cfg["data"],
            cfg["output"],
            cfg["checkpoints"],
            cfg["repositories"],
        ),
        n.lambda_role: iam.lambda_policy(
            ctx.region, ctx.account, n.function, n.endpoint, cfg["lambda"].get("s3_input")
        ),
    }


def cmd_iam(ctx: Ctx) -> None:
    docs = policies(ctx)
    ensure_role(ctx, ctx.names.sagemaker_role, "sagemaker", docs[ctx.names.sagemaker_role])
    ensure_role(ctx, ctx.names.lambda_role, "lambda", docs[ctx.names.lambda_role])


# ---- training and tuning ------------------------------------------------------------------


def training_definition(
    ctx: Ctx,
    image: str,
    instance_type: str,
    instance_count: int,
    spot: bool,
    hyperparameters: dict[str, str],
) -> dict[str, Any]:
    """The parts of CreateTrainingJob that a tuning job's definition shares."""
    cfg = ctx.config["train"]
    stopping = {"MaxRuntimeInSeconds": int(cfg["max_runtime_s"])}
    if spot:
        stopping["MaxWaitTimeInSeconds"] = int(cfg["max_wait_s"])
    return {
        "AlgorithmSpecification": {
            "TrainingImage": image,
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
        "OutputDataConfig": {"S3OutputPath": ctx.config["output"]},
        "ResourceConfig": {
            "InstanceType": instance_type,
            "InstanceCount": instance_count,
            "VolumeSizeInGB": int(cfg["volume_gb"]),
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": spot,
        "CheckpointConfig": {
            "S3Uri": f"{ctx.config['checkpoints'].rstrip('/')}/"
            f"{ctx.names.name}/{digest(hyperparameters)}",
            "LocalPath": "/opt/ml/checkpoints",
        },
    }


def training_job_request(
    ctx: Ctx,
    image: str,
    instance_type: str,
    instance_count: int,
    spot: bool,
    hyperparameters: dict[str, str],
) -> dict[str, Any]:
    spec = training_definition(ctx, image, instance_type, instance_count, spot, hyperparameters)
    spec["HyperParameters"] = {k: str(v) for k, v in hyperparameters.items()}
    return {
        "TrainingJobName": f"{ctx.names.name}-{digest(spec)}",
        **spec,
        "Tags": [{"Key": "dogbreed:name", "Value": ctx.names.name}],
    }


def cmd_train(
    ctx: Ctx,
    image: str,
    instance_type: str | None,
    instance_count: int | None,
    spot: bool,
    hps: dict[str, str],
    wait: bool,
    timeout_s: float,
) -> str:
    cfg = ctx.config["train"]
    hyperparameters = {**cfg["hyperparameters"], **hps}
    request = training_job_request(
        ctx,
        image,
        instance_type or cfg["instance_type"],
        instance_count or int(cfg["instance_count"]),
        spot,
        hyperparameters,
    )
    name = request["TrainingJobName"]
    if ctx.read(
        "sagemaker", "describe_training_job", ("ValidationException",), TrainingJobName=name
    ):
        ctx.say(f"training job {name} exists (same request): unchanged")
    else:
        ctx.write("sagemaker", "create_training_job", **request)
        ctx.say(f"created training job {name}")
    if wait and not ctx.dry_run:
        wait_training(ctx, name, timeout_s)
    return name


def wait_training(ctx: Ctx, name: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        job = ctx.read("sagemaker", "describe_training_job", TrainingJobName=name)
        status = (job["TrainingJobStatus"], job.get("SecondaryStatus"))
        if status != last:
            ctx.say(f"{name}: {status[0]} ({status[1]})")
            last = status
        if status[0] in ("Completed", "Failed", "Stopped"):
            if status[0] != "Completed":
                raise AwsError(f"{name}: {status[0]}: {job.get('FailureReason', '')}")
            return
        if time.monotonic() > deadline:
            raise AwsError(f"{name} still {status[0]} after {timeout_s:.0f}s")
        time.sleep(15)


def tuning_job_request(ctx: Ctx, image: str, max_jobs: int, parallel: int) -> dict[str, Any]:
    cfg, tune = ctx.config["train"], ctx.config["tune"]
    static = {
        k: str(v)
        for k, v in cfg["hyperparameters"].items()
        if k not in ("lr", "batch-size", "batch_size")
    }
    definition = training_definition(ctx, image, cfg["instance_type"], 1, False, static)
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
        "Tags": [{"Key": "dogbreed:name", "Value": ctx.names.name}],
    }


def cmd_tune(ctx: Ctx, image: str, max_jobs: int | None, parallel: int | None) -> str:
    tune = ctx.config["tune"]
    request = tuning_job_request(
        ctx, image, max_jobs or int(tune["max_jobs"]), parallel or int(tune["parallel_jobs"])
    )
    name = request["HyperParameterTuningJobName"]
    if ctx.read(
        "sagemaker",
        "describe_hyper_parameter_tuning_job",
        ("ResourceNotFound",),
        HyperParameterTuningJobName=name,
    ):
        ctx.say(f"tuning job {name} exists (same request): unchanged")
    else:
        ctx.write("sagemaker", "create_hyper_parameter_tuning_job", **request)
        ctx.say(f"created tuning job {name}")
    return name


# ---- endpoint and autoscaling ---------------------------------------------------------------


def cmd_deploy(
    ctx: Ctx, image: str, model_data: str, instance_type: str | None, wait_s: float
) -> None:
    n, cfg = ctx.names, ctx.config["deploy"]
    model = {
        "PrimaryContainer": {
            "Image": image,
            "ModelDataUrl": model_data,
            "Environment": {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"},
        },
        "ExecutionRoleArn": ctx.role_arn(n.sagemaker_role),
        "EnableNetworkIsolation": True,
    }
    model_name = f"{n.name}-{digest(model)}"
    if ctx.read("sagemaker", "describe_model", ("ValidationException",), ModelName=model_name):
        ctx.say(f"model {model_name} unchanged")
    else:
        ctx.write(
            "sagemaker",
            "create_model",
            ModelName=model_name,
            **model,
            Tags=[{"Key": "dogbreed:name", "Value": n.name}],
        )
        ctx.say(f"created model {model_name}")
    variants = [
        {
            "VariantName": VARIANT,
            "ModelName": model_name,
            "InitialInstanceCount": int(cfg["instance_count"]),
            "InstanceType": instance_type or cfg["instance_type"],
        }
    ]
    config_name = f"{n.name}-{digest(variants)}"
    if ctx.read(
        "sagemaker",
        "describe_endpoint_config",
        ("ValidationException",),
        EndpointConfigName=config_name,
    ):
        ctx.say(f"endpoint config {config_name} unchanged")
    else:
        ctx.write(
            "sagemaker",
            "create_endpoint_config",
            EndpointConfigName=config_name,
            ProductionVariants=variants,
        )
        ctx.say(f"created endpoint config {config_name}")
    endpoint = ctx.read(
        "sagemaker", "describe_endpoint", ("ValidationException",), EndpointName=n.endpoint
    )
    if endpoint is None:
        ctx.write(
            "sagemaker",
            "create_endpoint",
            EndpointName=n.endpoint,
            EndpointConfigName=config_name,
            Tags=[{"Key": "dogbreed:name", "Value": n.name}],
        )
        ctx.say(f"created endpoint {n.endpoint}")
    elif endpoint["EndpointConfigName"] != config_name:
        ctx.write(
            "sagemaker", "update_endpoint", EndpointName=n.endpoint, EndpointConfigName=config_name
        )
        ctx.say(f"updated endpoint {n.endpoint} to {config_name}")
    else:
        ctx.say(f"endpoint {n.endpoint} unchanged")
    if not ctx.dry_run:
        wait_in_service(ctx, wait_s)


def wait_in_service(ctx: Ctx, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        status = ctx.read("sagemaker", "describe_endpoint", EndpointName=ctx.names.endpoint)[
            "EndpointStatus"
        ]
        if status == "InService":
            ctx.say(f"endpoint {ctx.names.endpoint} InService")
            return
        if status == "Failed" or time.monotonic() > deadline:
            raise AwsError(f"endpoint {ctx.names.endpoint} is {status}")
        time.sleep(min(30, max(1, timeout_s / 60)))


def cmd_autoscale(
    ctx: Ctx, low: int, high: int, target: float, scale_in: int, scale_out: int
) -> None:
    n = ctx.names
    target_spec = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": n.scaling_resource,
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
    }
    found = ctx.read(
        "application-autoscaling",
        "describe_scalable_targets",
        ServiceNamespace="sagemaker",
        ResourceIds=[n.scaling_resource],
    )
    current = (found or {}).get("ScalableTargets", [])
    if current and (current[0]["MinCapacity"], current[0]["MaxCapacity"]) == (low, high):
        ctx.say(f"scalable target {n.scaling_resource} unchanged ({low}-{high})")
    else:
        ctx.write(
            "application-autoscaling",
            "register_scalable_target",
            **target_spec,
            MinCapacity=low,
            MaxCapacity=high,
        )
        ctx.say(
            f"{'updated' if current else 'registered'} scalable target "
            f"{n.scaling_resource} ({low}-{high} instances)"
        )
    config = {
        "TargetValue": float(target),
        "PredefinedMetricSpecification": {
            "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
        },
        "ScaleInCooldown": scale_in,
        "ScaleOutCooldown": scale_out,
    }
    found = ctx.read(
        "application-autoscaling",
        "describe_scaling_policies",
        ServiceNamespace="sagemaker",
        ResourceId=n.scaling_resource,
        PolicyNames=[n.scaling_policy],
    )
    existing = (found or {}).get("ScalingPolicies", [])
    if existing and existing[0].get("TargetTrackingScalingPolicyConfiguration") == config:
        ctx.say(f"scaling policy {n.scaling_policy} unchanged")
        return
    ctx.write(
        "application-autoscaling",
        "put_scaling_policy",
        PolicyName=n.scaling_policy,
        PolicyType="TargetTrackingScaling",
        **target_spec,
        TargetTrackingScalingPolicyConfiguration=config,
    )
    ctx.say(f"{'updated' if existing else 'created'} scaling policy {n.scaling_policy}")


# ---- Lambda --------------------------------------------------------------------------------


def lambda_zip() -> bytes:
    """The function's zip: one file, fixed timestamps, so equal code gives equal bytes."""
    source = (Path(__file__).parent / "lambda_function.py").read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("lambda_function.py", date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        zf.writestr(info, source)
    return buf.getvalue()


def _wait_function(ctx: Ctx, qualifier: str | None = None, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    params = {"FunctionName": ctx.names.function, **({"Qualifier": qualifier} if qualifier else {})}
    while not ctx.dry_run:
        conf = ctx.read("lambda", "get_function_configuration", **params)
        if (
            conf.get("State", "Active") != "Pending"
            and conf.get("LastUpdateStatus", "Successful") != "InProgress"
        ):
            return
        if time.monotonic() > deadline:
            raise AwsError(f"function {ctx.names.function} still updating")
        time.sleep(1)


def cmd_lambda(ctx: Ctx, zip_bytes: bytes, reserved: int, provisioned: int) -> None:
    n, cfg = ctx.names, ctx.config["lambda"]
    settings = {
        "Runtime": cfg["runtime"],
        "Role": ctx.role_arn(n.lambda_role),
        "Handler": "lambda_function.lambda_handler",
        "Timeout": int(cfg["timeout_s"]),
        "MemorySize": int(cfg["memory_mb"]),
        "Environment": {
            "Variables": {
                "ENDPOINT_NAME": n.endpoint,
                "ALLOW_URL_FETCH": "true" if cfg.get("allow_url_fetch", True) else "false",
            }
        },
    }
    sha = base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()
    current = ctx.read(
        "lambda", "get_function", ("ResourceNotFoundException",), FunctionName=n.function
    )
    if current is None:
        ctx.write(
            "lambda",
            "create_function",
            FunctionName=n.function,
            Code={"ZipFile": zip_bytes},
            Tags={"dogbreed:name": n.name},
            **settings,
        )
        ctx.say(f"created function {n.function}")
    else:
        conf = current["Configuration"]
        if conf["CodeSha256"] != sha:
            ctx.write("lambda", "update_function_code", FunctionName=n.function, ZipFile=zip_bytes)
            ctx.say(f"updated code of {n.function}")
            _wait_function(ctx)
        if any(conf.get(k) != v for k, v in settings.items()):
            ctx.write(
                "lambda", "update_function_configuration", FunctionName=n.function, **settings
            )
            ctx.say(f"updated configuration of {n.function}")
    _wait_function(ctx)
    _publish_and_alias(ctx, sha)
    _concurrency(ctx, reserved, provisioned)


def _publish_and_alias(ctx: Ctx, sha: str) -> None:
    n = ctx.names
    alias = ctx.read(
        "lambda", "get_alias", ("ResourceNotFoundException",), FunctionName=n.function, Name=ALIAS
    )
    if alias is not None:
        live = ctx.read(
            "lambda",
            "get_function_configuration",
            FunctionName=n.function,
            Qualifier=alias["FunctionVersion"],
        )
        latest = ctx.read("lambda", "get_function_configuration", FunctionName=n.function)
        same = {
            k: v
            for k, v in live.items()
            if k
            not in (
                "Version",
                "FunctionArn",
                "LastModified",
                "RevisionId",
                "ResponseMetadata",
                "LastUpdateStatus",
                "State",
            )
        }
        now = {k: v for k, v in latest.items() if k in same}
        if live["CodeSha256"] == sha and same == now:
            ctx.say(f"alias {ALIAS} -> version {alias['FunctionVersion']} unchanged")
            return
    version = ctx.write("lambda", "publish_version", FunctionName=n.function, CodeSha256=sha).get(
        "Version", "1"
    )
    if alias is None:
        ctx.write(
            "lambda", "create_alias", FunctionName=n.function, Name=ALIAS, FunctionVersion=version
        )
    else:
        ctx.write(
            "lambda", "update_alias", FunctionName=n.function, Name=ALIAS, FunctionVersion=version
        )
    ctx.say(f"published version {version}; alias {ALIAS} -> {version}")


def provisioned_request(ctx: Ctx, provisioned: int) -> dict[str, Any]:
    return {
        "FunctionName": ctx.names.function,
        "Qualifier": ALIAS,
        "ProvisionedConcurrentExecutions": provisioned,
    }


def _concurrency(ctx: Ctx, reserved: int, provisioned: int) -> None:
    n = ctx.names
    found = ctx.read("lambda", "get_function_concurrency", FunctionName=n.function) or {}
    if found.get("ReservedConcurrentExecutions") == reserved:
        ctx.say(f"reserved concurrency {reserved} unchanged")
    else:
        ctx.write(
            "lambda",
            "put_function_concurrency",
            FunctionName=n.function,
            ReservedConcurrentExecutions=reserved,
        )
        ctx.say(f"reserved concurrency of {n.function}: {reserved}")
    if provisioned:
        ctx.write(
            "lambda", "put_provisioned_concurrency_config", **provisioned_request(ctx, provisioned)
        )
        ctx.say(f"provisioned concurrency of {n.function}:{ALIAS}: {provisioned}")


# ---- invoke, upload, down ------------------------------------------------------------------


def cmd_invoke(ctx: Ctx, image: Path, endpoint: bool) -> dict[str, Any]:
    data = image.read_bytes()
    if endpoint:
        response = ctx.client("sagemaker-runtime").invoke_endpoint(
            EndpointName=ctx.names.endpoint,
            ContentType="application/x-image",
            Accept="application/json",
            Body=data,
        )
        answer = json.loads(response["Body"].read())
        return {"breed": answer["label"], "index": answer["index"], "score": answer["score"]}
    response = ctx.client("lambda").invoke(
        FunctionName=ctx.names.function,
        Qualifier=ALIAS,
        Payload=json.dumps({"image_base64": base64.b64encode(data).decode()}).encode(),
    )
    answer = json.loads(response["Payload"].read())
    if "error" in answer:
        raise AwsError(f"{image}: {answer.get('statusCode')}: {answer['error']}")
    return answer


def cmd_upload_data(ctx: Ctx, local: Path, uri: str, progress: bool) -> int:
    from tqdm import tqdm

    if not local.is_dir():
        raise ConfigError(f"{local} is not a directory")
    bucket, prefix = iam.split_s3(uri)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    s3 = ctx.client("s3")
    sent = 0
    with tqdm(
        total=sum(p.stat().st_size for p in files),
        unit="B",
        unit_scale=True,
        desc=f"s3://{bucket}/{prefix}",
        disable=not progress,
    ) as bar:
        for path in files:
            key = "/".join(filter(None, [prefix, path.relative_to(local).as_posix()]))
            head = ctx.read("s3", "head_object", ("404", "NoSuchKey"), Bucket=bucket, Key=key)
            if head is None or head["ContentLength"] != path.stat().st_size:
                if ctx.dry_run:
                    ctx.write("s3", "put_object", Bucket=bucket, Key=key)
                else:
                    s3.upload_file(str(path), bucket, key)
                sent += 1
            bar.update(path.stat().st_size)
    ctx.say(f"uploaded {sent} of {len(files)} files to s3://{bucket}/{prefix}")
    return sent


def cmd_down(ctx: Ctx) -> None:
    """Delete what the commands above created for N, and nothing else."""
    n = ctx.names
    scaling = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": n.scaling_resource,
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
    }
    steps = [
        (
            "application-autoscaling",
            "delete_scaling_policy",
            {"PolicyName": n.scaling_policy, **scaling},
        ),
        ("application-autoscaling", "deregister_scalable_target", scaling),
        ("sagemaker", "delete_endpoint", {"EndpointName": n.endpoint}),
    ]
    if not ctx.dry_run:
        sm = ctx.client("sagemaker")
        configs = sm.list_endpoint_configs(NameContains=n.name, MaxResults=100)
        steps += [
            ("sagemaker", "delete_endpoint_config", {"EndpointConfigName": c["EndpointConfigName"]})
            for c in configs["EndpointConfigs"]
            if n.owns(c["EndpointConfigName"])
        ]
        models = sm.list_models(NameContains=n.name, MaxResults=100)
        steps += [
            ("sagemaker", "delete_model", {"ModelName": m["ModelName"]})
            for m in models["Models"]
            if n.owns(m["ModelName"])
        ]
    steps += [
        ("lambda", "delete_function", {"FunctionName": n.function}),
        ("logs", "delete_log_group", {"logGroupName": n.log_group}),
    ]
    for role in (n.sagemaker_role, n.lambda_role):
        steps += [
            ("iam", "delete_role_policy", {"RoleName": role, "PolicyName": role}),
            ("iam", "delete_role", {"RoleName": role}),
        ]
    for service, op, params in steps:
        _delete(ctx, service, op, params)


def _delete(ctx: Ctx, service: str, op: str, params: dict[str, Any]) -> None:
    if ctx.dry_run:
        ctx.write(service, op, **params)
        return
    from botocore.exceptions import ClientError

    try:
        getattr(ctx.client(service), op)(**params)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        gone = (
            "NotFound" in err.get("Code", "")
            or "NoSuchEntity" in err.get("Code", "")
            or err.get("Code") == "ObjectNotFoundException"
            or any(
                s in err.get("Message", "")
                for s in ("not found", "does not exist", "Could not find", "No ")
            )
        )
        if not gone:
            raise AwsError(f"{service} {op}: {err.get('Code')}: {err.get('Message')}") from None
        return
    ctx.say(
        f"deleted: {service} {op.removeprefix('delete_').removeprefix('deregister_')} "
        f"{next(iter(params.values()))}"
    )
