"""The int8 model: written by training behind an accuracy gate, chosen by precision."""

from __future__ import annotations

from pathlib import Path

from dogbreed.core import hardware


def test_cpu_flags_reads_this_machine():
    flags = hardware.cpu_flags()
    if Path("/proc/cpuinfo").is_file():
        assert flags and all(isinstance(f, str) for f in flags)
