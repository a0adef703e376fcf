"""OpenMP wait policy for the processes that train: chosen from the load they will share.

An idle OpenMP thread either spins (fast hand-off to the next parallel region) or sleeps. When
threads x concurrently training processes exceed the cores, spinning threads steal the cores
their partners need and a 2-thread step ran ~20x slower (`PASSIVE` fixes that); when they do
not, `PASSIVE` costs ~20 % (measured 8,050-8,160 vs 9,550-10,050 tokens/s, 4x128 fp32 on 2
idle cores). Below the cores raygrow leaves libgomp's default, which spins briefly (~300k
iterations) and then sleeps: the speed of `ACTIVE` inside a training loop, without `ACTIVE`'s
seconds-long spinning in a process that has stopped training (a test runner, a reused Tune
actor between trials). An explicit `OMP_WAIT_POLICY` in the environment always wins.

The variable is read once, when torch loads libgomp, so it must reach a process in its
environment at start: raygrow sets it for the Ray processes it starts (trial actors, Train
workers), never for an already running one.
"""

from __future__ import annotations

import os

ENV = "OMP_WAIT_POLICY"


def wait_policy(threads: int, concurrent: int, cores: int | None = None) -> str | None:
    """`PASSIVE` when `threads` x `concurrent` processes oversubscribe `cores`, else None
    (libgomp's default); a value already in the environment is returned unchanged."""
    if os.environ.get(ENV):
        return os.environ[ENV]
    cores = cores or os.cpu_count() or 1
    return "PASSIVE" if max(1, threads) * max(1, concurrent) > cores else None


def wait_policy_env(threads: int, concurrent: int, cores: int | None = None) -> dict[str, str]:
    """`{"OMP_WAIT_POLICY": ...}` for a runtime env, or {} to leave the default."""
    policy = wait_policy(threads, concurrent, cores)
    return {ENV: policy} if policy else {}
