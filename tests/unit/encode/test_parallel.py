"""How a process spreads its forward passes over the CPU (``worker.encode.parallel``)."""

import pytest

from worker.encode.parallel import CPU_REPLICAS_MAX, Parallelism, machine_cores, parallelism


@pytest.mark.parametrize(
    "cores, replicas, threads, expected",
    [
        (2, None, None, Parallelism(2, 1)),  # one one-thread pass per core
        (1, None, None, Parallelism(1, 1)),
        (3, None, None, Parallelism(3, 1)),
        (8, None, None, Parallelism(CPU_REPLICAS_MAX, 2)),  # past the cap, more threads each
        (16, None, None, Parallelism(CPU_REPLICAS_MAX, 4)),
        (8, None, 4, Parallelism(2, 4)),  # threads set: replicas fill the cores with them
        (2, None, 4, Parallelism(1, 4)),  # more threads than cores: still one replica
        (8, 1, None, Parallelism(1, 8)),  # one replica set: it gets every core
        (8, 3, None, Parallelism(3, 2)),
        (2, 4, None, Parallelism(4, 1)),  # more replicas than cores: one thread each
        (4, 2, 3, Parallelism(2, 3)),  # both set: kept as they are
    ],
)
def test_cpu_fills_the_cores_around_what_is_set(cores, replicas, threads, expected):
    assert parallelism("cpu", cores, replicas, threads) == expected


def test_cpu_without_a_core_count_uses_the_machines():
    assert parallelism("cpu", None, None, None) == parallelism("cpu", machine_cores(), None, None)


@pytest.mark.parametrize(
    "cores, replicas, threads, expected",
    [
        (None, None, None, Parallelism(1, None)),  # torch's own thread default
        (8, None, None, Parallelism(1, 8)),  # a configured share sizes the host-side threads
        (8, 3, 2, Parallelism(3, 2)),
    ],
)
def test_cuda_runs_one_replica_unless_told(cores, replicas, threads, expected):
    assert parallelism("cuda", cores, replicas, threads) == expected
