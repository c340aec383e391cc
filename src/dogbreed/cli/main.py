"""The `dogbreed` command: parse, dispatch, and map errors to exit codes in one place.

Each part of the package adds its own subcommands (train_cmds, serve_cmds,
aws_cmds, local_cmds); their parsers import only the core, so `dogbreed aws --help` never
loads torch, numpy, Pillow or ONNX Runtime. Errors the user can fix print one
line and exit with their class's code (core.errors); `--help` on every command
explains its flags.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from dogbreed import __version__
from dogbreed.cli import aws_cmds, local_cmds, serve_cmds, train_cmds
from dogbreed.core.errors import DogbreedError, exit_code
from dogbreed.core.logs import configure_logging

log = logging.getLogger("dogbreed")


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line instead of usage plus error.

    Abbreviations are off: `--epoch 3` is a typo to report, not `--epochs`.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        """An unknown flag is reported by the command it was given to, with the flag it
        most resembles (argparse leaves it to the top-level parser, which knows neither)."""
        namespace, extras = super().parse_known_args(args, namespace)
        flags = [a.split("=", 1)[0] for a in extras if a.startswith("-")]
        if flags:
            known = [o for action in self._actions for o in action.option_strings]
            close = difflib.get_close_matches(flags[0], known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            self.error(f"unrecognized argument {flags[0]}{hint}")
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


# command -> (add its parser, run it)
COMMANDS: dict[str, tuple[Callable, Callable[[argparse.Namespace], int]]] = {
    "data": (train_cmds.add_data, train_cmds.run_data),
    "train": (train_cmds.add_train, train_cmds.run_train),
    "predict": (serve_cmds.add_predict, serve_cmds.run_predict),
    "serve": (serve_cmds.add_serve, serve_cmds.run_serve),
    "classify": (serve_cmds.add_classify, serve_cmds.run_classify),
    "lambda-local": (serve_cmds.add_lambda_local, serve_cmds.run_lambda_local),
    "aws": (aws_cmds.add_aws, aws_cmds.run_aws),
    "local": (local_cmds.add_local, local_cmds.run_local),
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="dogbreed",
        description="Train a dog-breed classifier and serve it "
        "on SageMaker, EC2 or a laptop with the same code.",
    )
    parser.add_argument("--version", action="version", version=f"dogbreed {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def report_error(command: str, exc: BaseException) -> int:
    """One line on stderr for the user, the reason in SageMaker's failure file for
    training; the exit code of the error's class. Anything unexpected is a bug:
    its traceback goes to the log and the command exits 1."""
    if isinstance(exc, KeyboardInterrupt):
        print(f"dogbreed {command}: interrupted", file=sys.stderr)
        return exit_code(exc)
    # A file the user named that cannot be read or written is theirs to fix, not a bug.
    user_path = isinstance(exc, OSError) and exc.filename is not None
    if user_path:
        reason = f"{exc.strerror or exc}: {exc.filename}"
    elif isinstance(exc, DogbreedError):
        reason = str(exc)
    else:
        reason = f"{type(exc).__name__}: {exc}"
    if command == "train":  # SageMaker shows this file as the job's failure reason
        from dogbreed.train.sagemaker import write_failure

        write_failure(reason)
    if user_path or isinstance(exc, DogbreedError):
        print(f"dogbreed {command}: error: {reason}", file=sys.stderr)
    else:
        log.error("dogbreed %s: unexpected error (a bug): %s", command, reason, exc_info=exc)
    return exit_code(exc)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(quiet=args.quiet)
    try:
        return COMMANDS[args.command][1](args)
    except (Exception, KeyboardInterrupt) as exc:
        if isinstance(exc, KeyboardInterrupt):
            ignore_further_interrupts()
        return report_error(args.command, exc)


def ignore_further_interrupts() -> None:
    """The command is ending on an interrupt: one more Ctrl-C or SIGTERM while it reports
    and exits must not turn its exit code 130 into death by that signal."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
