"""How a worker process spreads its forward passes over the CPU: how many run at once (replicas,
each a forward thread sharing the model's weights) and how many torch threads each uses.

On CPU several one-thread passes beat one pass over all the cores: a pass over two threads stops
at every operator until both are done, so when anything else runs on a core (the broker, the
tokenizer, the loop) both wait, while a one-thread pass loses only the time it was pushed off. On
the 2-core machine two one-thread replicas did 1.3x the tokens/s of one two-thread pass
(``docs/performance.md``, CPU replicas). More than ``CPU_REPLICAS_MAX`` replicas was not measured,
so from twice that many cores each of them gets more threads instead (cores in between are left
to the host work).

Pure functions; nothing here imports torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CPU_REPLICAS_MAX = 4  # replicas an unset CPU process runs at most; the cores beyond get threads


@dataclass(frozen=True, slots=True)
class Parallelism:
    replicas: int
    threads: int | None  # torch threads a pass uses; None leaves torch's default


def machine_cores() -> int:
    """Cores this process may run on (its CPU affinity where the system has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parallelism(
    device_type: str, cores: int | None, replicas: int | None, threads: int | None
) -> Parallelism:
    """Replicas and torch threads for a process on ``device_type`` with ``cores`` cores (None: not
    configured, so the machine's on CPU and torch's default on CUDA), given the settings
    (``replicas``, ``threads``; None when unset). What is set is kept; on CPU what is unset fills
    the cores: one one-thread replica per core up to ``CPU_REPLICAS_MAX``, then more threads each."""
    if device_type != "cpu":
        return Parallelism(replicas or 1, threads or cores)
    cores = max(1, cores or machine_cores())
    if replicas is None:
        replicas = max(1, min(CPU_REPLICAS_MAX, cores // (threads or 1)))
    if threads is None:
        threads = max(1, cores // replicas)
    return Parallelism(replicas, threads)
