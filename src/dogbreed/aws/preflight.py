"""What a verb checks and says before its first request.

A setting the verb would send (in a request or a policy document) that still names
the placeholder bucket stops a real run in one line, naming the settings, the file
to edit and the verb's flags that override them; a dry run goes on, and opens with
a line saying it is one, then the same warning. That opening is written before the
dry run's first line of output (Preamble), so a dry run that a check refuses prints
the error alone.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from dogbreed.aws.config import config_file, placeholder_problem, placeholders
from dogbreed.aws.context import Ctx
from dogbreed.core.errors import ConfigError

# The settings each verb puts into a request or a policy document.
S3_SETTINGS_USED = ("data", "output", "checkpoints", "lambda.s3_input", "transform.input")
SETTINGS_USED: dict[str, tuple[str, ...]] = {
    "iam": S3_SETTINGS_USED,
    "train": S3_SETTINGS_USED,
    "tune": S3_SETTINGS_USED,
    "up": S3_SETTINGS_USED,
    "lambda": ("lambda.s3_input",),
    "transform": ("output", "transform.input"),
}
# What `aws iam` prints instead with --admin-policy / --operator-policy (the operator's
# async grants are on N's output prefix).
POLICY_SETTINGS_USED = {"admin": (), "operator": ("data", "output")}
# Settings a verb sends only with some flags or settings: `deploy` puts `output` into
# the endpoint config with --async or --capture-percent, `invoke --async` uploads under it.
OUTPUT = ("output",)
# The verb's flags that override a setting.
OVERRIDDEN_BY = {"train": {"data": "--data", "output": "--output"}, "up": {"data": "--data"}}


def settings_used(verb: str, policy: str | None = None) -> tuple[str, ...]:
    """The settings `verb` sends; `policy`: "admin" or "operator" when it prints that policy."""
    return POLICY_SETTINGS_USED[policy] if policy else SETTINGS_USED.get(verb, ())


def settings_sent(args: Any, config: dict[str, Any]) -> tuple[str, ...]:
    """The settings this command (`args`: the CLI's) sends: its verb's, and `output` where
    its flags or the config put it into a request."""
    used = settings_used(args.verb, policy_printed(args))
    if args.verb == "invoke" and getattr(args, "asynchronous", False):
        return used + OUTPUT
    if args.verb == "deploy":
        deploy = config["deploy"]
        asynchronous = _given(getattr(args, "asynchronous", None), deploy["async"])
        percent = _given(getattr(args, "capture_percent", None), deploy["capture_percent"])
        if asynchronous or percent:
            return used + OUTPUT
    return used


def _given(flag: Any, setting: Any) -> Any:
    return setting if flag is None else flag


def problem(
    verb: str,
    config: dict[str, Any],
    path: Path | None,
    policy: str | None = None,
    used: tuple[str, ...] | None = None,
) -> str | None:
    """One line naming the settings `verb` would send (`used`: settings_sent's, else the
    verb's) that still hold the placeholder, the file to edit (`path`: --config, None: the
    default) and the flags that override them; None when there is none."""
    found = placeholders(config, settings_used(verb, policy) if used is None else used)
    if not found:
        return None
    flags = OVERRIDDEN_BY.get(verb, {})
    return placeholder_problem(found, config_file(path), flags, f"`aws {verb}`")


def policy_printed(args: Any) -> str | None:
    """ "admin" or "operator" when `aws iam` prints that policy instead of changing roles."""
    if getattr(args, "admin_policy", False):
        return "admin"
    return "operator" if getattr(args, "operator_policy", False) else None


def check(args: Any, config: dict[str, Any]) -> None:
    """A ConfigError for a placeholder the verb (`args`: the CLI's) would send, unless this
    is a dry run."""
    used = settings_sent(args, config)
    found = problem(args.verb, config, args.config, policy_printed(args), used)
    if found and not args.dry_run:
        raise ConfigError(found)


def open_dry_run(ctx: Ctx, args: Any) -> None:
    """A dry run's opening lines, before its first output; on stderr at once when stdout
    carries a JSON document (a printed policy, `status --json`)."""
    policy = policy_printed(args)
    warning = problem(args.verb, ctx.config, args.config, policy, settings_sent(args, ctx.config))
    lines = dry_run_lines(args.verb, getattr(args, "name", None), warning)
    if policy or getattr(args, "json", False):
        print("\n".join(lines), file=sys.stderr, flush=True)
    else:
        ctx.out = Preamble(ctx.out, lines)


def dry_run_lines(verb: str, name: str | None, warning: str | None) -> list[str]:
    """A dry run's opening: that it is one, and the placeholder warning, if any."""
    who = f" for {name}" if name else ""
    lines = [
        f"dry run of `aws {verb}`{who}: nothing is created, changed or deleted; lines "
        "marked (dry run) are what a real run would do"
    ]
    if warning:
        lines.append(f"warning: {warning}; a real run stops here")
    return lines


class Preamble:
    """A text stream that writes `lines` before the first text written to it."""

    def __init__(self, out: TextIO, lines: list[str]) -> None:
        self.out, self.lines = out, lines

    def write(self, text: str) -> int:
        if self.lines:
            self.out.write("".join(f"{line}\n" for line in self.lines))
            self.lines = []
        return self.out.write(text)

    def flush(self) -> None:
        self.out.flush()
