"""What this machine has: CPU feature flags and the cores this process may use."""

from __future__ import annotations

import os

# CPU flags of int8 dot-product instructions: x86 VNNI and AMX, Arm dotprod.
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
# CPU flags of native bf16 arithmetic (emulated bf16 is slower than fp32).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def int8_native() -> bool:
    """Whether this CPU has int8 dot products. Without them int8 gains little and
    rounds differently (AVX2's 16-bit saturation), so `auto` stays on fp32."""
    return bool(cpu_flags() & set(INT8_DOT_FLAGS))


def bf16_native_cpu() -> bool:
    return bool(cpu_flags() & set(BF16_FLAGS))


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


# cgroup v2, then v1: the memory a container (a SageMaker serverless endpoint's 1-6 GB
# included) may use; "max" or a huge number means no limit of its own.
CGROUP_MEMORY_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def memory_limit_bytes() -> int:
    """The memory this process may use: its cgroup's limit, else the machine's."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in CGROUP_MEMORY_FILES:
        try:
            with open(path) as fh:
                raw = fh.read().strip()
        except OSError:
            continue
        if raw.isdigit():
            return min(int(raw), total)
    return total
