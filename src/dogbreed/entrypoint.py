"""Container entry point: `IMAGE train` and `IMAGE serve`, as SageMaker runs them.

docker run IMAGE train                  SageMaker: settings from /opt/ml; several
                                        hosts in resourceconfig.json make ONE
                                        DDP job (torchrun, master = first host)
docker run IMAGE train --data /data ... EC2/Docker host: plain flags
docker run IMAGE serve                  the endpoint on /opt/ml/model, port 8080
docker run IMAGE dogbreed predict ...   any other command runs as given
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from dogbreed.cli.main import main as cli_main
from dogbreed.cli.main import report_error
from dogbreed.core.logs import configure_logging
from dogbreed.core.opt_ml import MODEL_DIR, base_dir


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = args[0], args[1:]
    if command == "train":
        from dogbreed.train.launcher import run_train

        configure_logging()
        try:
            return run_train(rest, dict(os.environ))
        except (Exception, KeyboardInterrupt) as exc:
            return report_error("train", exc)
    if command == "serve":
        model_dir = str(base_dir(os.environ) / MODEL_DIR)
        # SageMaker reaches the container on its own address: listen on every interface.
        return cli_main(["serve", "--model-dir", model_dir, "--host", "0.0.0.0", *rest])
    os.execvp(command, args)  # e.g. `docker run IMAGE dogbreed predict ...` or `bash`
    return 0


if __name__ == "__main__":
    sys.exit(main())
