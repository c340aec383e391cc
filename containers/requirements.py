#!/usr/bin/env python3
"""Print the requirements of pyproject.toml's extras (and the base dependencies), one a line.

The images install these under constraints.txt before the package itself, so that
their heavy layer is keyed on the dependency lists and the pins alone, not on the
rest of pyproject.toml (tool settings, other extras).

    containers/requirements.py serve          > containers/build/requirements-serve.txt
    containers/requirements.py train sagemaker > containers/build/requirements-train.txt
"""

import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def requirements(extras: list[str]) -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"requirements.py: no extra {', '.join(unknown)} in {PYPROJECT.name}")
    return [*project.get("dependencies", []), *(r for e in extras for r in optional[e])]


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1:])))
