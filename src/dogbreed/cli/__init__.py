"""The `dogbreed` command line (entry point: dogbreed.cli.main)."""

from dogbreed.cli.main import main

__all__ = ["main"]
