"""The package's shape: parts that stay apart, no cycles, small modules, a standalone Lambda.

The import contracts themselves are import-linter's (pyproject.toml, run by
`make unit` and `make test`); these tests check what it cannot express.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "dogbreed"
HEAVY = ("torch", "torchvision", "numpy", "PIL", "onnxruntime", "matplotlib")
MAX_LINES = 450
# The Lambda ships as one file (its zip holds nothing else), page and URL fetching included.
ONE_FILE_MAX_LINES = {Path("aws/lambda_function.py"): 500}

LOADED = """
import sys
from dogbreed.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[0].split(",")))
print("LOADED", ",".join(heavy))
"""


def loaded_by(*argv: str) -> list[str]:
    """The heavy top-level packages a `dogbreed ARGV` run imports (in a fresh interpreter)."""
    proc = subprocess.run(
        [sys.executable, "-c", LOADED.replace("sys.argv[0]", repr(",".join(HEAVY))), *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = next(x for x in proc.stdout.splitlines() if x.startswith("LOADED"))
    return [m for m in line.split(" ", 1)[1].split(",") if m]


@pytest.mark.parametrize(
    "argv",
    [
        ("aws", "--help"),
        ("aws", "iam", "--help"),
        ("aws", "deploy", "--help"),
        ("aws", "upload-data", "/nonexistent", "bucket/prefix"),
        ("--help",),
    ],
)
def test_the_control_plane_and_help_load_no_image_stack(argv):
    assert loaded_by(*argv) == []


@pytest.mark.parametrize("argv", [("serve", "--help"), ("train", "--help"), ("--help",)])
def test_the_images_commands_load_no_aws_sdk(argv):
    """The serve and train images hold no boto3 or botocore: building the CLI's parser
    (every verb's flags and help, the aws ones included) must not import them."""
    proc = subprocess.run(
        [sys.executable, "-c", LOADED.replace("sys.argv[0]", repr("boto3,botocore")), *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "LOADED \n" in proc.stdout, proc.stdout[-500:] + proc.stderr[-2000:]


def test_no_import_cycles():
    graph = grimp.build_graph("dogbreed")
    modules = sorted(graph.modules)
    edges = {m: graph.find_modules_directly_imported_by(m) & set(modules) for m in modules}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in modules:
        if module not in state:
            visit(module, [module])


def test_modules_stay_small():
    sizes = {p.relative_to(PACKAGE): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    too_big = {p: n for p, n in sizes.items() if n > ONE_FILE_MAX_LINES.get(p, MAX_LINES)}
    assert too_big == {}


def test_the_lambda_function_is_standard_library_and_boto3():
    tree = ast.parse((PACKAGE / "aws" / "lambda_function.py").read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    assert roots - set(sys.stdlib_module_names) <= {"boto3", "botocore"}


def test_no_deprecated_torch_jit_in_the_package():
    users = [p for p in PACKAGE.rglob("*.py") if "torch.jit" in p.read_text()]
    assert users == []
