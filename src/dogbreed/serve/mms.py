"""multi-model-server as our own child: its configuration, its command line, its folder.

MMS is a Java front end (HTTP, queue, /ping) that starts Python workers. Its
own launcher (`multi-model-server --start`) and the inference toolkit's
`start_model_server` detach Java, write a pid file and a config into /etc and
/tmp, and leave us to find the process again. We start Java directly, as
their command line does, so that `dogbreed serve` owns it: the Popen is the
front end, nothing is looked up machine-wide, nothing is left behind.

Everything lives in one private folder (mode 0700) that `serve` removes:

    config.properties     rendered from ServeSettings (below)
    log4j2.xml            console only: MMS writes no log files
    management.sock       MMS's management API: never on the serving address
    plugins/              GET /execution-parameters (Batch Transform), an MMS endpoint plugin
    inflight/, running/   the workers' request flags (worker_load.py)
    .mms.sock.9000 ...    the workers' sockets (Java's tmpdir points here)
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from dogbreed.core import settings
from dogbreed.core.errors import ConfigError
from dogbreed.core.serve_settings import ServeSettings

log = logging.getLogger(__name__)

HANDLER_SERVICE = "dogbreed.serve.handler_service"
FRONT_END_MAIN = "com.amazonaws.ml.mms.ModelServer"
WORKER_SCRIPT = "model_service_worker.py"
MODEL_NAME = "model"
# The front end refuses a body over its own limit by resetting the connection. Ours
# sits well above the codec's, so that a body up to twice the limit still reaches a
# worker and gets the JSON 413 a client can read.
FRONT_END_SLACK_BYTES = 1024 * 1024
# The endpoint plugin (Java source, service file; in the image also its jar, built there).
PLUGIN_SOURCE = Path(__file__).resolve().parent / "plugin"
PLUGIN_JAR = "execution-parameters.jar"
PLUGIN_SERVICE = "META-INF/services/software.amazon.ai.mms.servingsdk.ModelServerEndpoint"


@dataclass(frozen=True)
class Runtime:
    """The server's private folder and the paths in it."""

    root: Path

    @classmethod
    def create(cls) -> Runtime:
        return cls(Path(tempfile.mkdtemp(prefix="dogbreed-serve-")))  # mode 0700

    @property
    def config(self) -> Path:
        return self.root / "config.properties"

    @property
    def log_config(self) -> Path:
        return self.root / "log4j2.xml"

    @property
    def management_socket(self) -> Path:
        return self.root / "management.sock"

    @property
    def plugins(self) -> Path:
        """MMS endpoint plugins (jars): on the front end's class path when present."""
        return self.root / "plugins"

    @property
    def inflight(self) -> Path:
        """Each worker's flag, held for a whole request: SIGTERM drains on them."""
        return self.root / "inflight"

    @property
    def running(self) -> Path:
        """Each worker's flag, held while ONNX Runtime runs: the thread policy reads them."""
        return self.root / "running"

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def front_end_limit(opts: ServeSettings) -> int:
    """MMS's max_request_size: twice ours and a margin (see FRONT_END_SLACK_BYTES)."""
    return 2 * opts.max_payload_bytes + FRONT_END_SLACK_BYTES


def inference_address(opts: ServeSettings) -> str:
    host = f"[{opts.host}]" if ":" in opts.host else opts.host
    return f"http://{host}:{opts.port}"


def render_config(opts: ServeSettings, runtime: Runtime, handler: str = HANDLER_SERVICE) -> str:
    """config.properties: every key from the settings, nothing from MMS's environment."""
    props = {
        "inference_address": inference_address(opts),
        "management_address": f"unix:{runtime.management_socket}",
        "default_workers_per_model": opts.workers,
        # MMS reads default_response_timeout in minutes; this one is in seconds.
        "default_response_timeout_seconds": opts.timeout_s,
        "max_request_size": front_end_limit(opts),
        "job_queue_size": opts.job_queue,
        "default_service_handler": handler,
        "decode_input_request": "false",
        "enable_envvars_config": "false",  # MMS_* variables cannot change what we rendered
        "async_logging": "true",
    }
    if (runtime.plugins / PLUGIN_JAR).is_file():
        props["plugins_path"] = runtime.plugins  # as MMS's launcher reads it (see command)
    return "".join(f"{key}={value}\n" for key, value in props.items())


def render_log_config(quiet: bool) -> str:
    """Console only. A worker's stdout comes through WorkerLifeCycle at INFO (its log
    lines), its stderr at WARN (our handler's warnings and tracebacks, see
    handler_service); MMS's own start-up chatter only as warnings, less its noise."""
    workers = "warn" if quiet else "info"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Configuration>
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="%d{{ISO8601}} [%-5p] %t %c{{1}} - %m%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="com.amazonaws.ml.mms.wlm.WorkerLifeCycle" level="{workers}">
      <RegexFilter regex="attachIOStreams.*" onMatch="DENY" onMismatch="NEUTRAL"/>
    </Logger>
    <Logger name="com.amazonaws.ml.mms.metrics" level="error"/>
    <Logger name="ACCESS_LOG" level="off"/>
    <Logger name="MODEL_LOG" level="warn"/>
    <Logger name="MODEL_METRICS" level="off"/>
    <Logger name="MMS_METRICS" level="off"/>
    <Logger name="io.netty" level="error"/>
    <Logger name="org.apache" level="off"/>
    <Root level="warn"><AppenderRef ref="STDOUT"/></Root>
  </Loggers>
</Configuration>
"""


def mms_home() -> Path:
    """Where the mms package is installed: its Java front end is mms/frontend/*.jar."""
    spec = importlib.util.find_spec("mms")
    if spec is None or spec.origin is None:
        raise ConfigError("multi-model-server is not installed: pip install 'dogbreed[serve]'")
    return Path(spec.origin).parent.parent


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not found or not Path(found).is_file():
        raise ConfigError(
            "the model server needs Java 17+: install a JRE (e.g. "
            "openjdk-17-jre-headless) or use the serve image"
        )
    return found


def class_path(home: Path, runtime: Runtime) -> str:
    """MMS's jars, and the plugins' as MMS's launcher adds `plugins_path/*`: the front end
    finds endpoint plugins on its class path (java.util.ServiceLoader)."""
    entries = [str(home / "mms" / "frontend" / "*")]
    if (runtime.plugins / PLUGIN_JAR).is_file():
        entries.append(str(runtime.plugins / "*"))
    return os.pathsep.join(entries)


def command(opts: ServeSettings, runtime: Runtime, model_dir: Path) -> list[str]:
    """The front end's command line, as MMS's own launcher builds it."""
    home = mms_home()
    return [
        java(),
        f"-Dmodel_server_home={home}",
        f"-Dlog4j.configurationFile=file://{runtime.log_config}",
        f"-Djava.io.tmpdir={runtime.root}",  # the workers' sockets: ours alone
        *shlex.split(opts.vmargs),
        "-cp",
        class_path(home, runtime),
        FRONT_END_MAIN,
        "--python",
        sys.executable,
        "-f",
        str(runtime.config),
        "-s",
        "/",  # model store: the model is named by its absolute path below
        "-m",
        f"{MODEL_NAME}={model_dir}",
    ]


def install_plugin(runtime: Runtime) -> bool:
    """Put the /execution-parameters plugin's jar into runtime.plugins: the one the image
    built, else one compiled here when a JDK's javac is found; else the endpoint is
    absent (one log line) and everything else serves as before."""
    built = PLUGIN_SOURCE / PLUGIN_JAR
    runtime.plugins.mkdir(mode=0o700, exist_ok=True)
    target = runtime.plugins / PLUGIN_JAR
    if built.is_file():
        shutil.copyfile(built, target)
        return True
    javac = _javac()
    if javac is None:
        log.info("no javac (a JDK): serving without GET /execution-parameters (Batch Transform)")
        return False
    try:
        compile_plugin(javac, mms_home() / "mms" / "frontend" / "model-server.jar", target)
    except (OSError, subprocess.SubprocessError) as exc:
        reason = getattr(exc, "stderr", None) or str(exc)  # javac's own message first
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        log.warning(
            "serving without GET /execution-parameters: its plugin did not build (%s)",
            " ".join(reason.split())[:300],
        )
        target.unlink(missing_ok=True)
        return False
    return True


def _javac() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "javac").is_file():
        return str(Path(home) / "bin" / "javac")
    return shutil.which("javac")


def compile_plugin(javac: str, sdk_jar: Path, target: Path) -> Path:
    """javac the plugin against MMS's jar (its servingsdk) and write the jar `target`:
    the classes and the ServiceLoader file. Class files for Java 8 and later, so any
    runtime that runs MMS loads them."""
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        classes = Path(scratch)
        source = PLUGIN_SOURCE / "ExecutionParameters.java"
        subprocess.run(
            [javac, "--release", "8", "-Xlint:-options", "-nowarn", "-encoding", "UTF-8",
             "-cp", str(sdk_jar), "-d", str(classes), str(source)],
            check=True, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        partial = target.with_name(target.name + ".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as jar:
            jar.write(PLUGIN_SOURCE / PLUGIN_SERVICE, PLUGIN_SERVICE)
            for path in sorted(classes.rglob("*.class")):
                jar.write(path, path.relative_to(classes).as_posix())
        partial.replace(target)
    return target


def child_environment(opts: ServeSettings, runtime: Runtime) -> dict[str, str]:
    """Our environment with every serving setting written out: the workers parse it once."""
    env = dict(os.environ)
    env.update(opts.environ())
    env[settings.RUNTIME_DIR] = str(runtime.root)
    env["TMPDIR"] = str(runtime.root)  # what the workers' libraries write goes with us
    env["PYTHONUNBUFFERED"] = "1"  # worker log lines reach the console as they happen
    return env


def start(
    opts: ServeSettings,
    runtime: Runtime,
    model_dir: Path,
    quiet: bool = False,
    handler: str = HANDLER_SERVICE,
) -> subprocess.Popen:
    """Write the folder's files and start the front end; its Popen is the server."""
    install_plugin(runtime)
    runtime.config.write_text(render_config(opts, runtime, handler))
    runtime.log_config.write_text(render_log_config(quiet))
    runtime.inflight.mkdir(mode=0o700, exist_ok=True)
    runtime.running.mkdir(mode=0o700, exist_ok=True)
    return subprocess.Popen(
        command(opts, runtime, model_dir),
        env=child_environment(opts, runtime),
        cwd=runtime.root,
        stdin=subprocess.DEVNULL,
    )
