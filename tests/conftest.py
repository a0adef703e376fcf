"""Shared fixtures. `ray_cluster`: one local Ray instance for the whole pytest session.

Use it from any test that needs Ray (mark the test `@pytest.mark.ray`)::

    def test_something(ray_cluster, tmp_path):
        ...  # ray is initialised: 2 CPUs, custom resource `train_driver` for Tune trial drivers

Never call `ray.init`/`ray.shutdown` in a test yourself. The instance is always a new local
one (`address="local"`), never a `ray start` cluster that happens to run on the machine. It
keeps the dashboard on (Train V2's placement-group cleaner needs the State API, and so do the
leak checks with `ray.util.state`) and exports its address as `RAY_API_SERVER_ADDRESS`, so
State API calls reach this instance even when other Ray instances run on the same machine.
"""

from __future__ import annotations

import os

import pytest

import raygrow  # noqa: F401 - first, before any test module imports torch: OpenMP's wait policy

# tests pick their MLflow stores themselves; a store set in the shell must not receive them
os.environ.pop("MLFLOW_TRACKING_URI", None)

RAY_NUM_CPUS = 2
"""Logical CPUs of the test cluster (the standard machine has 2 cores)."""


@pytest.fixture(scope="session")
def ray_cluster():
    ray = pytest.importorskip("ray")
    from raygrow.train.driver import apply_fast_start_env, ray_session

    # a starved worker group fails visibly after 30 s instead of retrying for minutes
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "30")
    apply_fast_start_env()
    if ray.is_initialized():
        ray.shutdown()
    with ray_session(
        address="local",
        num_cpus=RAY_NUM_CPUS,
        resources={"train_driver": 4},
        log_to_driver=False,
        logging_level="WARNING",
    ):
        yield ray
