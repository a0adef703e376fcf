"""Function-preservation checks on tiny models: toy data, brief training, one-call operator check.

Used by `python -m raygrow.growth check` and by the growth tests. The toy token stream is a fixed
random first-order Markov chain (each token has a few likely successors), so a tiny model learns
it within tens of steps and a check on a *trained* model is not trivial. Training here uses
torch's AdamW directly (growth must not import raygrow.train); the semantics match
`raygrow.train.optim` (betas 0.9/0.95, decay on matrices only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from raygrow.growth._core import grow
from raygrow.growth.context import Batch, GrowthState, OptimState
from raygrow.model import ModelConfig, Transformer


def toy_config(shape: str = "2x64", n_heads: int = 2, **overrides: Any) -> ModelConfig:
    """A tiny config for checks: `LxD`, vocab 64, context 32 unless overridden."""
    overrides.setdefault("vocab_size", 64)
    overrides.setdefault("max_seq_len", 32)
    return ModelConfig.from_shape(shape, n_heads=n_heads, **overrides)


def toy_batch_fn(
    vocab_size: int, batch: int = 8, seq_len: int = 32, seed: int = 0, successors: int = 3
) -> Callable[[int], Batch]:
    """i -> (x, y), (batch, seq_len) int64: the i-th batch of a fixed random Markov chain."""
    g = torch.Generator().manual_seed(seed)
    nxt = torch.randint(0, vocab_size, (vocab_size, successors), generator=g)
    probs = torch.softmax(torch.randn(successors, generator=g) * 1.5, 0)

    def batch_fn(i: int) -> Batch:
        gi = torch.Generator().manual_seed(seed * 1_000_003 + i + 1)
        tok = torch.randint(0, vocab_size, (batch,), generator=gi)
        seq = [tok]
        for _ in range(seq_len):
            pick = torch.multinomial(probs, batch, replacement=True, generator=gi)
            tok = nxt[tok, pick]
            seq.append(tok)
        data = torch.stack(seq, 1)
        return data[:, :-1], data[:, 1:]

    return batch_fn


def optim_by_fqn(model: torch.nn.Module, opt: torch.optim.Optimizer) -> OptimState:
    out: OptimState = {}
    for name, p in model.named_parameters():
        if opt.state.get(p):
            out[name] = {k: v.detach().clone() for k, v in opt.state[p].items()}
    return out


def train_briefly(
    state: GrowthState,
    batch_fn: Callable[[int], Batch],
    steps: int,
    lr: float = 3e-3,
    start: int = 0,
) -> tuple[GrowthState, list[float]]:
    """`steps` AdamW steps from `state` (its optimizer state loaded); returns the new state and
    the training losses. Deterministic given the batches."""
    with torch.random.fork_rng(devices=[]):
        model = Transformer(state.config)
    model.load_state_dict(state.params)
    params = dict(model.named_parameters())
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
        foreach=False,
    )
    for name, entry in state.optim.items():
        opt.state[params[name]] = {k: v.clone() for k, v in entry.items()}
    losses = []
    for i in range(steps):
        x, y = batch_fn(start + i)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    new = GrowthState(
        state.config,
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        optim_by_fqn(model, opt),
        state.step + steps,
    )
    return new, losses


def fresh_state(config: ModelConfig, seed: int = 0) -> GrowthState:
    """A randomly initialised model (seeded, global RNG untouched) with no optimizer state."""
    with torch.random.fork_rng(devices=[]):
        model = Transformer(config)
        model.init_weights(torch.Generator().manual_seed(seed))
    return GrowthState(config, {k: v.detach().clone() for k, v in model.state_dict().items()})


def optim_matches(new: GrowthState) -> dict[str, Any]:
    """Whether the optimizer state's keys are the new FQNs and every moment has its shape."""
    keys_ok = set(new.optim) == set(new.params)
    shapes_ok = all(
        tuple(e[k].shape) == tuple(new.params[f].shape)
        for f, e in new.optim.items()
        for k in ("exp_avg", "exp_avg_sq")
        if f in new.params and k in e
    )
    steps = sorted({int(e["step"]) for e in new.optim.values() if "step" in e})
    return {
        "entries": len(new.optim),
        "keys_match": keys_ok,
        "shapes_match": shapes_ok,
        "steps": steps,
    }


def check_operator(
    state: GrowthState,
    operator: str,
    params: dict[str, Any],
    opt_policy: str = "carry",
    seed: int = 0,
    probe_batch: Batch | None = None,
    train_batch_fn: Callable[[int], Batch] | None = None,
) -> tuple[GrowthState, dict[str, Any]]:
    """Grow `state` and summarise: the report dict plus an `optim` consistency block."""
    new, report = grow(
        state,
        operator,
        generator=torch.Generator().manual_seed(seed),
        opt_policy=opt_policy,
        probe_batch=probe_batch,
        train_batch_fn=train_batch_fn,
        **params,
    )
    summary = report.to_dict()
    summary["optim"] = optim_matches(new)
    return new, summary
