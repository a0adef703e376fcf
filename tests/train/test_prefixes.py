"""The prefix store: shared un-grown prefixes change no number, keys match only what is equal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from raygrow.model import ModelConfig
from raygrow.schedule import fixed
from raygrow.train.config import TrainConfig
from raygrow.train.loop import train
from raygrow.train.prefixes import PrefixStore, growth_free_until, prefix_key, wsd_decay_start

TARGET = ModelConfig(n_layers=2, d_model=32, n_heads=2, max_seq_len=32)
START = TARGET.replace(n_layers=1)


def config(out: Path, steps: int = 40, **kw) -> TrainConfig:
    base = dict(
        model=TARGET,
        seq_len=32,
        batch_size=8,
        tokens=steps * 8 * 32,
        warmup_steps=4,
        eval_every_tokens=10 * 8 * 32,
        eval_windows=16,
        out_dir=str(out),
        log_every_steps=0,
        threads=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def curve(result) -> list[tuple[int, float, float]]:
    return [(r["step"], r["val_loss"], r["flops"]) for r in result.history]


def same_state(a, b) -> None:
    assert a.state.model_config == b.state.model_config
    for k, v in a.state.model_state.items():
        assert torch.equal(v, b.state.model_state[k]), k


def test_grown_run_resumes_the_small_runs_prefix_bit_identically(tmp_path: Path) -> None:
    store = PrefixStore(tmp_path / "store")
    schedule = fixed(START, "stack", 0.5, factor=2)  # grows at step 20
    alone = train(config(tmp_path / "alone"), schedule, verbose=False)
    # the small model alone at the same budget leaves its un-grown states in the store
    small = train(config(tmp_path / "small", model=START), verbose=False, prefixes=store)
    assert small.final["flops_reused"] == 0.0
    shared = train(config(tmp_path / "shared"), schedule, verbose=False, prefixes=store)
    assert curve(shared) == curve(alone)  # every evaluation, the prefix's replayed ones too
    same_state(shared, alone)
    growth = shared.state.growth_history[0]
    assert growth["step"] == 20 and growth["flops"] == alone.state.growth_history[0]["flops"]
    assert shared.final["flops_reused"] == growth["flops"]  # the whole prefix came from the store
    assert [r.get("reused", False) for r in shared.history] == [True] * 3 + [False] * 2
    lines = (tmp_path / "shared" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [0, 10, 20, 30, 40]
    # test is evaluated once, at the grown run's own end; the replayed prefix has none
    assert [("test_loss" in json.loads(x)) for x in lines] == [False] * 4 + [True]
    assert shared.final["test_loss"] == alone.final["test_loss"]
    assert "test_loss" not in small.history[-2] and "test_loss" in small.final


def test_later_growth_resumes_an_earlier_growths_prefix(tmp_path: Path) -> None:
    store = PrefixStore(tmp_path / "store")
    early, late = fixed(START, "stack", 0.25, factor=2), fixed(START, "stack", 0.75, factor=2)
    train(config(tmp_path / "early"), early, verbose=False, prefixes=store)
    shared = train(config(tmp_path / "late"), late, verbose=False, prefixes=store)
    alone = train(config(tmp_path / "alone"), late, verbose=False)
    assert curve(shared) == curve(alone)
    same_state(shared, alone)
    # the early run stored its states up to its growth (steps 10 and 0.25 * 40 = 10)
    assert shared.final["flops_reused"] == alone.history[1]["flops"]
    # a run that grows before anything stored is usable trains from step 0
    earliest = train(
        config(tmp_path / "e"), fixed(START, "stack", 0.1, factor=2), verbose=False, prefixes=store
    )
    assert earliest.final["flops_reused"] == 0.0


def test_wsd_branch_equals_a_separate_run(tmp_path: Path) -> None:
    """A WSD run to 30 steps resumes the trunk of a 40-step WSD run at its own decay start."""
    decay = wsd_decay_start(30, 0.2)
    store = PrefixStore(tmp_path / "store", landmarks=frozenset({decay}))
    long = config(tmp_path / "long", lr_schedule="wsd")
    train(long, verbose=False, prefixes=store)
    short = config(tmp_path / "short", steps=30, lr_schedule="wsd")
    branch = train(short, verbose=False, prefixes=store)
    alone = train(short.replace(out_dir=str(tmp_path / "alone")), verbose=False)
    assert [r["step"] for r in branch.history if r.get("reused")] == [0, 10, 20]
    assert branch.final["flops_reused"] == pytest.approx(alone.final["flops"] * decay / 30)
    assert curve(branch) == curve(alone)
    same_state(branch, alone)
    assert [("test_loss" in r) for r in branch.history] == [False] * 3 + [True]
    assert branch.final["test_loss"] == alone.final["test_loss"]


def test_longer_wsd_budget_continues_the_trunk(tmp_path: Path) -> None:
    """A longer WSD scratch budget (60 steps, the search's 1.5x frontier point) resumes the
    40-step run's stable phase where it ends (its decay start, 32: a landmark, as the search
    makes it when longer budgets exist) and equals a separate run."""
    landmarks = frozenset({wsd_decay_start(40, 0.2), wsd_decay_start(60, 0.2)})
    store = PrefixStore(tmp_path / "store", landmarks=landmarks)
    train(config(tmp_path / "full", lr_schedule="wsd"), verbose=False, prefixes=store)
    longer = config(tmp_path / "longer", steps=60, lr_schedule="wsd")
    branch = train(longer, verbose=False, prefixes=store)
    alone = train(longer.replace(out_dir=str(tmp_path / "alone")), verbose=False)
    assert [r["step"] for r in branch.history if r.get("reused")] == [0, 10, 20, 30]
    assert branch.final["flops_reused"] == pytest.approx(alone.final["flops"] * 32 / 60)
    assert curve(branch) == curve(alone)
    same_state(branch, alone)


def test_finished_run_is_reused_whole_and_cosine_budgets_do_not_share(tmp_path: Path) -> None:
    store = PrefixStore(tmp_path / "store")
    first = train(config(tmp_path / "a", model=START), verbose=False, prefixes=store)
    again = train(config(tmp_path / "b", model=START), verbose=False, prefixes=store)
    assert curve(again) == curve(first)
    assert again.final["flops_reused"] == first.final["flops"]  # nothing computed
    assert (tmp_path / "b" / "checkpoints").is_dir()  # the trial still ends with a checkpoint
    # the test loss was stored with the end state and is reported again, once, at the end
    assert again.final["test_loss"] == first.final["test_loss"]
    assert [("test_loss" in r) for r in again.history] == [False] * 4 + [True]
    final_lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(final_lines[-1])["test_loss"] == first.final["test_loss"]
    # a stored end state without it (written before the test split existed): the reusing run
    # evaluates the final model itself, with the same result
    stored = list(store.root.rglob("step-00000040.json"))
    assert stored
    for records in stored:
        blob = json.loads(records.read_text())
        blob["records"][-1].pop("test_loss")
        records.write_text(json.dumps(blob))
    third = train(config(tmp_path / "d", model=START), verbose=False, prefixes=store)
    assert third.final["flops_reused"] == first.final["flops"]
    assert third.final["test_loss"] == first.final["test_loss"]
    shorter = train(config(tmp_path / "c", model=START, steps=30), verbose=False, prefixes=store)
    assert shorter.final["flops_reused"] == 0.0  # cosine: the LR depends on the total


@pytest.mark.parametrize(
    ("change", "shares"),
    [
        ({"seed": 1}, False),
        ({"lr": 1e-3}, False),
        ({"batch_size": 16}, False),
        ({"micro_batch_size": 4}, False),
        ({"eval_every_tokens": 5 * 8 * 32}, False),
        ({"warmup_steps": 3}, False),
        ({"weight_decay": 0.0}, False),
        ({"out_dir": "/elsewhere", "keep_checkpoints": 5, "log_every_steps": 7}, True),
    ],
)
def test_prefix_keys(change: dict, shares: bool) -> None:
    base = config(Path("/x"))
    a = prefix_key(base, START, "data", threads=1, device="cpu")
    b = prefix_key(base.replace(**change), START, "data", threads=1, device="cpu")
    assert (a.trunk == b.trunk) is shares


def test_prefix_keys_model_data_and_budget() -> None:
    base = config(Path("/x"))
    key = prefix_key(base, START, "data", threads=1, device="cpu")
    assert key.trunk != prefix_key(base, TARGET, "data", threads=1, device="cpu").trunk
    assert key.trunk != prefix_key(base, START, "other", threads=1, device="cpu").trunk
    assert key.trunk != prefix_key(base, START, "data", threads=2, device="cpu").trunk
    longer = base.replace(tokens=base.tokens * 2)
    assert key.trunk != prefix_key(longer, START, "data", threads=1, device="cpu").trunk
    wsd = base.replace(lr_schedule="wsd")
    w1 = prefix_key(wsd, START, "data", threads=1, device="cpu")
    w2 = prefix_key(wsd.replace(tokens=base.tokens * 2), START, "data", threads=1, device="cpu")
    assert w1.trunk == w2.trunk and w1.branch != w2.branch
    assert (w1.trunk_until, w2.trunk_until) == (32, 64)
    const = prefix_key(base.replace(lr_schedule="constant"), START, "d", threads=1, device="cpu")
    assert const.trunk_until == 39  # the forced final evaluation belongs to the budget


def test_damaged_checkpoint_is_skipped_with_a_warning(tmp_path: Path) -> None:
    warnings: list[str] = []
    store = PrefixStore(tmp_path / "store", log=warnings.append)
    train(config(tmp_path / "a", model=START), verbose=False, prefixes=store)
    stored = sorted((tmp_path / "store").rglob("step-*.pt"))
    assert [int(p.stem.split("-")[1]) for p in stored] == [10, 20, 30, 40]
    blob = stored[-1].read_bytes()
    stored[-1].write_bytes(blob[: len(blob) // 2])  # truncated
    again = train(config(tmp_path / "b", model=START), verbose=False, prefixes=store)
    assert len(warnings) == 1 and "truncated or corrupt" in warnings[0]
    assert again.final["flops_reused"] == again.history[3]["flops"]  # the step-30 state
    assert not stored[-1].exists() or stored[-1].read_bytes() != blob[: len(blob) // 2]


def test_size_cap_keeps_the_most_recently_used(tmp_path: Path) -> None:
    store = PrefixStore(tmp_path / "store", cap_mb=0.0)
    train(config(tmp_path / "a", model=START), verbose=False, prefixes=store)
    assert store.summary()["checkpoints"] == 0  # a cap of 0 keeps nothing
    roomy = PrefixStore(tmp_path / "store2", cap_mb=10.0)
    train(config(tmp_path / "b", model=START), verbose=False, prefixes=roomy)
    summary = roomy.summary()
    assert summary["checkpoints"] == 4 and summary["keys"] == 1 and 0 < summary["mb"] < 10


def test_growth_free_until_replays_clocks_and_curve() -> None:
    records = [{"step": s, "flops": s * 10.0, "val_loss": 5.0 - s / 10} for s in (0, 10, 20)]
    by_tokens = lambda tokens, flops, curve: tokens >= 150  # noqa: E731 - grows at step 15
    assert growth_free_until(15, records, by_tokens, 10, 1.0)
    assert not growth_free_until(16, records, by_tokens, 10, 1.0)
    # a curve trigger sees only the evaluations made by then
    by_curve = lambda tokens, flops, curve: len(curve) >= 3  # noqa: E731 - at step 20
    assert growth_free_until(20, records, by_curve, 10, 1.0)
    assert not growth_free_until(21, records, by_curve, 10, 1.0)
    assert growth_free_until(10**4, records, None, 10, 1.0)


def _train_into(args: tuple[str, str, str | None]) -> list[tuple[int, float, float]]:
    out, store, at = args
    torch.set_num_threads(1)
    schedule = fixed(START, "stack", float(at), factor=2) if at else None
    cfg = config(Path(out), model=TARGET if at else START)
    return curve(train(cfg, schedule, verbose=False, prefixes=PrefixStore(Path(store))))


def test_concurrent_trials_never_block_or_corrupt_the_store(tmp_path: Path) -> None:
    """Three processes train runs sharing one prefix at the same time: each finds nothing or a
    complete state, writes the same files without clobbering a reader, and gets the curve it
    gets alone; a later run resumes from what they left."""
    import multiprocessing as mp

    store = str(tmp_path / "store")
    jobs = [
        (str(tmp_path / "small"), store, None),
        (str(tmp_path / "late"), store, "0.75"),
        (str(tmp_path / "late2"), store, "0.75"),
    ]
    with mp.get_context("spawn").Pool(3) as pool:
        curves = pool.map(_train_into, jobs)
    alone = curve(
        train(config(tmp_path / "alone"), fixed(START, "stack", 0.75, factor=2), verbose=False)
    )
    assert curves[1] == curves[2] == alone
    assert curves[0] == curve(train(config(tmp_path / "a2", model=START), verbose=False))
    assert not list((tmp_path / "store").rglob("*.tmp"))  # every write completed or was undone
    later = train(
        config(tmp_path / "later"),
        fixed(START, "stack", 0.5, factor=2),
        verbose=False,
        prefixes=PrefixStore(tmp_path / "store"),
    )
    assert later.final["flops_reused"] == later.state.growth_history[0]["flops"]
