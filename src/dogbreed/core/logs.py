"""Logging, configured once by whichever entry point runs (the CLI or the container's).

Our own loggers ("dogbreed.*") speak at INFO (WARNING with --quiet); libraries
(the ONNX exporter, botocore, the SageMaker toolkits) at WARNING.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(message)s"


def configure_logging(quiet: bool = False) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_dogbreed", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._dogbreed = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("dogbreed").setLevel(logging.WARNING if quiet else logging.INFO)
