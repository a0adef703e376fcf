"""OpenMP wait policy of the processes that train, chosen from how they share the cores.

An idle OpenMP thread either spins (fast hand-off to the next parallel region) or sleeps
(`PASSIVE`). Spinning only pays while every thread of the team owns a core. Measured on a
2-core AMD EPYC (AVX2), 4x64 fp32 loop with 2 threads while other processes ran (load 4-9):
libgomp's default (spin ~300k iterations, then sleep) 249-809 tokens/s, `ACTIVE` 184-251,
`GOMP_SPINCOUNT=1000` 6,000-7,200, `PASSIVE` 3,600-10,800; the previous session measured 10-20x
losses the same way. On an idle machine `PASSIVE` costs up to ~20 % (issue 13: 8,050-8,160 vs
ACTIVE 9,550-10,050 tokens/s, 4x128); `benchmarks/speed.py` measures both on the machine at hand.

The rule (`wait_policy`): a team of threads x concurrently training processes that fills the
cores waits passively, because the search driver, Ray's daemons or a test runner then preempt
team threads; a team that leaves a core free (or a single thread, which has no team) keeps
libgomp's default. `import raygrow` makes `PASSIVE` the default of a raygrow process (its own
threads usually fill the cores); an `OMP_WAIT_POLICY` the user set always wins. The variable is
read once, when torch loads libgomp, so raygrow passes it to the Ray processes it starts (trial
actors, Train workers) in their environment at start.
"""

from __future__ import annotations

import os

ENV = "OMP_WAIT_POLICY"
USER_VALUE = os.environ.get(ENV) or None
"""The user's own setting, read before raygrow sets its default."""


def apply_process_default() -> None:
    """`PASSIVE` for this process unless the user chose (must run before torch is imported)."""
    if USER_VALUE is None:
        os.environ[ENV] = "PASSIVE"


def wait_policy(threads: int, concurrent: int, cores: int | None = None) -> str | None:
    """The user's value if set; `PASSIVE` when `threads` x `concurrent` teams fill `cores`;
    else None (libgomp's default)."""
    if USER_VALUE is not None:
        return USER_VALUE
    cores = cores or os.cpu_count() or 1
    if threads <= 1:
        return None  # one thread per process: no team, nothing waits
    return "PASSIVE" if threads * max(1, concurrent) >= cores else None


def wait_policy_env(threads: int, concurrent: int, cores: int | None = None) -> dict[str, str]:
    """`{"OMP_WAIT_POLICY": ...}` for a runtime env, or {} to leave the default."""
    policy = wait_policy(threads, concurrent, cores)
    return {ENV: policy} if policy else {}
