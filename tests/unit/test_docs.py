"""The documentation (docs/ and the README) agrees with the code it describes.

Every `--flag` the pages give a `dogbreed` command exists in that command's parser;
every DOGBREED_/SAGEMAKER_/SM_ variable they name is one the code reads (or the
platform's); every command, variable and training setting is documented; the
tables of AWS settings, modules and errors match the code.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dogbreed.cli.main import build_parser
from dogbreed.core import errors, settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
README = ROOT / "README.md"

# Flags of other tools that the pages name in prose (docker, dockerd, mkdocs).
OTHER_TOOLS = {"--build-arg", "--gpus", "--filter", "--bridge", "--strict"}
# Variables the platform or its toolkits define, which the pages may name.
PLATFORM_VARIABLES = {
    "SAGEMAKER_MODEL_SERVER_TIMEOUT",  # the toolkit's older timeout, in minutes
    # set by Batch Transform
    "SAGEMAKER_BATCH",
    "SAGEMAKER_MAX_PAYLOAD_IN_MB",
    "SAGEMAKER_BATCH_STRATEGY",
    "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS",
}
# Training settings whose section is still to be written (a heading waits for each):
# remove a name here once its flag is documented.
PENDING_SETTINGS: set[str] = set()

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
VARIABLE = re.compile(r"\b(?:DOGBREED|SAGEMAKER|SM)_[A-Z0-9_]*[A-Z0-9]\b")
SPAN = re.compile(r"`([^`]+)`")  # a code span may wrap onto the next line
BENCH = re.compile(r"\bbench/\w+\.py\b")
SHELL_STOP = {"|", "||", "&", "&&", ";", ">", ">>", "<"}


# ---- the command tree ------------------------------------------------------------------------


def _children(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings if o.startswith("--")}


def command_tree() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every command path (() is `dogbreed` itself) -> its parser."""
    tree: dict[tuple[str, ...], argparse.ArgumentParser] = {}

    def walk(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
        tree[path] = parser
        for name, child in _children(parser).items():
            walk((*path, name), child)

    walk((), build_parser())
    return tree


TREE = command_tree()
LEAVES = sorted(p for p, parser in TREE.items() if p and not _children(parser))


def flags_under(path: tuple[str, ...]) -> set[str]:
    """The flags of a command, or of every command below a group."""
    return set().union(*(_options(p) for q, p in TREE.items() if q[: len(path)] == path))


# ---- reading the pages -----------------------------------------------------------------------


@dataclass
class Section:
    page: Path
    heading: str
    code: list[str] = field(default_factory=list)  # lines of fenced blocks, continuations joined
    prose: list[str] = field(default_factory=list)


def sections(page: Path) -> list[Section]:
    found = [Section(page, "")]
    fenced, pending = False, ""
    for line in page.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            found[-1].code.append(pending + line)
            pending = ""
        elif line.startswith("#"):
            found.append(Section(page, line.lstrip("# ")))
        else:
            found[-1].prose.append(line)
    return found


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=True)
    except ValueError:
        return text.split()


@dataclass
class Mention:
    """`dogbreed ...` in a page: the command it names and the flags given to it."""

    path: tuple[str, ...]
    flags: list[str]
    text: str


def mention(text: str) -> Mention | None:
    words = _words(text)
    start = next(
        (i for i, w in enumerate(words) if w == "dogbreed" or w.endswith("/dogbreed")), None
    )
    if start is None:
        return None
    path: tuple[str, ...] = ()
    flags: list[str] = []
    descending = True
    for word in words[start + 1 :]:
        if word in SHELL_STOP:
            break
        if descending and not word.startswith("-"):
            if word in _children(TREE[path]):
                path = (*path, word)
                continue
            descending = False  # a placeholder (VERB, ...) or an argument
        flags += FLAG.findall(word)
    return Mention(path, flags, text)


def spans(section: Section) -> list[str]:
    """The prose's inline code, each span on one line."""
    return [" ".join(s.split()) for s in SPAN.findall("\n".join(section.prose))]


def mentions(section: Section) -> list[Mention]:
    found = (mention(t) for t in [*section.code, *spans(section)])
    return [m for m in found if m is not None]


def prose_flags(section: Section) -> list[tuple[str, str]]:
    """(flag, its code span) for flags in prose that no `dogbreed` mention holds."""
    out = []
    for span in spans(section):
        if mention(span) is None and not BENCH.search(span):
            out += [(flag, span) for flag in FLAG.findall(span)]
    return out


def bench_flags(section: Section) -> list[tuple[str, str]]:
    """(flag, script) for `python bench/x.py --flag` in code blocks and spans."""
    out = []
    for text in [*section.code, *spans(section)]:
        script = BENCH.search(text)
        if script and mention(text) is None:
            out += [(flag, script.group()) for flag in FLAG.findall(text[script.end() :])]
    return out


ALL_SECTIONS = [s for page in [*PAGES, README] for s in sections(page)]
DOCS_TEXT = "\n".join(p.read_text() for p in PAGES)


def _where(section: Section) -> str:
    return f"{section.page.relative_to(ROOT)} ({section.heading or 'top'})"


# ---- the tests -------------------------------------------------------------------------------


def test_the_docs_pages_exist():
    assert (DOCS / "index.md").is_file() and (ROOT / "mkdocs.yml").is_file()
    assert len(PAGES) >= 8


def test_every_flag_given_to_a_command_exists_in_its_parser():
    wrong = []
    for section in ALL_SECTIONS:
        for m in mentions(section):
            known = flags_under(m.path) | _options(TREE[()])
            wrong += [
                f"{_where(section)}: {flag} in `{m.text}`" for flag in m.flags if flag not in known
            ]
    assert not wrong, "flags no parser has:\n" + "\n".join(wrong)


def test_every_flag_in_prose_belongs_to_a_command_its_page_names():
    wrong = []
    for page in [*PAGES, README]:
        parts = sections(page)
        paths = {m.path for s in parts for m in mentions(s)} or {()}
        known = set().union(*(flags_under(p) for p in paths)) | OTHER_TOOLS
        wrong += [
            f"{_where(section)}: {flag} in `{span}`"
            for section in parts
            for flag, span in prose_flags(section)
            if flag not in known
        ]
    assert not wrong, "flags in prose that no command of the page has:\n" + "\n".join(wrong)


def test_benchmark_flags_exist_in_their_scripts():
    wrong = []
    for section in ALL_SECTIONS:
        for flag, script in bench_flags(section):
            if f'"{flag}"' not in (ROOT / script).read_text():
                wrong.append(f"{_where(section)}: {script} has no {flag}")
    assert not wrong, "\n".join(wrong)


def test_every_command_is_documented():
    missing = [
        " ".join(path)
        for path in LEAVES
        if not re.search(
            r"dogbreed\s+" + r"\s+".join(map(re.escape, path)) + r"(?![\w-])", DOCS_TEXT
        )
    ]
    assert not missing, f"commands docs/ never names as `dogbreed ...`: {missing}"


def _known_variables() -> set[str]:
    ours = {v for k, v in vars(settings).items() if k.isupper() and isinstance(v, str)}
    return ours | set(settings.ENV) | PLATFORM_VARIABLES


def test_every_variable_the_docs_name_is_read_by_the_code():
    known = _known_variables()
    wrong = sorted(
        {
            f"{page.relative_to(ROOT)}: {name}"
            for page in [*PAGES, README]
            for name in VARIABLE.findall(page.read_text())
            if name not in known and not name.startswith(settings.SM_CHANNEL_PREFIX)
        }
    )
    assert not wrong, f"variables core.settings does not know: {wrong}"


def test_every_serving_and_training_variable_is_documented():
    missing = [name for name in settings.ENV if f"`{name}`" not in DOCS_TEXT]
    assert not missing, f"variables docs/ does not document: {missing}"


def test_every_training_setting_is_documented():
    missing = [
        key
        for key in settings.SETTINGS
        if key not in PENDING_SETTINGS and not re.search(rf"--{key}(?![\w-])", DOCS_TEXT)
    ]
    assert not missing, f"training settings docs/ does not document: {missing}"


# ---- the tables ------------------------------------------------------------------------------

CONFIG_ROW = re.compile(r"^\| `([a-z0-9_.]+)` \| `([^`]+)` \|", re.M)


def _flatten(obj: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in obj.items():
        if isinstance(value, dict) and f"{prefix}{key}" != "train.hyperparameters":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_every_aws_setting_is_in_the_config_page_with_its_default():
    from dogbreed.aws.config import defaults

    rows = {
        key: json.loads(value)
        for key, value in CONFIG_ROW.findall((DOCS / "aws" / "config.md").read_text())
    }
    expected = _flatten(defaults())
    missing, unknown = sorted(set(expected) - set(rows)), sorted(set(rows) - set(expected))
    assert not missing and not unknown, f"missing: {missing}, unknown: {unknown}"
    for key, value in expected.items():
        assert rows[key] == value, f"docs say {key} defaults to {rows[key]!r}, not {value!r}"


def test_every_module_is_in_the_architecture_page():
    text = (DOCS / "architecture.md").read_text()
    package = ROOT / "src" / "dogbreed"
    modules = [
        str(p.relative_to(package))
        for p in sorted(package.rglob("*.py"))
        if p.name != "__init__.py" and "egg-info" not in str(p)
    ]
    missing = [m for m in modules if f"| `{m}` |" not in text]
    assert not missing, f"modules the architecture page's tables lack: {missing}"


ERROR_ROW = re.compile(r"^\| `([A-Za-z]+Error)` \| (\d+) \| (\d+) \|", re.M)


def test_the_error_table_is_core_errors():
    rows = {
        name: (int(code), int(status))
        for name, code, status in ERROR_ROW.findall((DOCS / "architecture.md").read_text())
    }
    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, errors.DogbreedError)
    }
    assert set(rows) == set(classes)
    for name, cls in classes.items():
        assert rows[name] == (cls.exit_code, cls.http_status), name


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
def test_the_quick_start_names_the_make_targets_and_the_venv(page):
    text = (ROOT / page).read_text()
    for needed in (
        "make demo",
        "make test",
        "make unit",
        ".venv/bin/dogbreed",
        "source .venv/bin/activate",
    ):
        assert needed in text, f"{page} lacks {needed}"
