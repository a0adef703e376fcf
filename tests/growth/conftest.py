"""Shared by the growth tests: one torch thread, and a briefly trained 2x64 state."""

from __future__ import annotations

import pytest
import torch

from raygrow.growth import GrowthState
from raygrow.growth.check import fresh_state, toy_batch_fn, toy_config, train_briefly


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny matmuls gain nothing from threads, and a loaded CI box makes 2 threads slow
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained() -> GrowthState:
    batches = toy_batch_fn(64, batch=8, seq_len=32)
    return train_briefly(fresh_state(toy_config("2x64"), seed=1), batches, 30)[0]
