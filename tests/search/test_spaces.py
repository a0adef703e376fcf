"""Every shipped search space, validated by one parametrized test (no Ray, no training).

Each space must (a) only suggest, deterministically (a FixedTrial replay gives the same sample),
(b) turn every sample into a schedule that `GrowthSchedule.validate` accepts for a target it is
meant for, (c) suggest operator-specific parameters only when that operator is chosen, and
(d) be fast (Ray warns above 1 s per define-by-run call).
"""

from __future__ import annotations

import time
import warnings

import optuna
import pytest

from raygrow.errors import ConfigError
from raygrow.growth import OPERATORS
from raygrow.model import ModelConfig
from raygrow.search.samples import describe, normalize_sample, plan_stages, sample_to_schedule
from raygrow.search.spaces import SpaceRef, resolve_space, validate_space
from search_spaces import SPACES
from search_spaces._common import stage

BUDGET = 160 * 16 * 128
SEQ = 128
TARGETS = {
    "default": "4x128",
    "gstack": "8x128",
    "width": "4x128",
    "staged": "4x128",
    "all_operators": "4x128",
    "timing_factor": "12x64",
    "study_g24": "4x32",
    "study_g248": "8x32",
    "study_operators": "8x32",
    "study_g24_late": "4x32",
    "study_g248_late": "8x32",
    "study_g24_any": "4x32",
    "study_g248_any": "8x32",
}
SINGLE_OPERATOR = {
    "timing_factor",
    "study_g24",
    "study_g248",
    "study_g24_late",
    "study_g248_late",
    "study_g24_any",
    "study_g248_any",
}
"""Spaces that sweep one operator's timing/factor on purpose (no operator choice)."""


def target_of(name: str) -> ModelConfig:
    return ModelConfig.from_shape(TARGETS.get(name, "4x128"))


def test_every_space_has_a_target() -> None:
    assert set(SPACES) == set(TARGETS)


def asks(fn, n: int, seed: int = 0):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        trial = study.ask()
        sample = fn(trial)
        yield trial, sample
        study.tell(trial, 0.0)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_space_samples_valid_schedules(name: str) -> None:
    check = validate_space(SpaceRef(name), target_of(name), BUDGET, SEQ, n=128, seed=1)
    assert check.samples == 128
    assert check.seconds_per_sample < 0.1
    assert check.common_start.n_params() < target_of(name).n_params()
    for op in check.operators:
        assert op in OPERATORS


@pytest.mark.parametrize("name", sorted(SPACES))
def test_space_is_conditional(name: str) -> None:
    """A parameter named `<operator>.x` appears only with that operator, `rescale.x` only with
    lr_policy=rescale; every operator the space lists is reached."""
    ref = SpaceRef(name)
    seen_ops = set()
    for trial, _ in asks(ref, 150, seed=2):
        growth = ref.sample(optuna.trial.FixedTrial(trial.params))
        ops = {st["operator"] for st in growth["stages"]}
        policies = {st["lr_policy"] for st in growth["stages"]}
        seen_ops |= ops
        for param in trial.params:
            prefix = param.split(".", 1)[0] if "." in param else None
            if prefix in OPERATORS:
                assert prefix in ops, f"{param} suggested for {ops}"
            elif prefix is not None:
                assert prefix in policies, f"{param} suggested with lr_policy {policies}"
    assert len(seen_ops) >= (1 if name in SINGLE_OPERATOR else 2)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_space_fixed_trial_and_speed(name: str) -> None:
    ref = SpaceRef(name)
    for trial, added in asks(ref, 20, seed=3):
        start = time.perf_counter()
        again = ref(optuna.trial.FixedTrial(trial.params))
        assert time.perf_counter() - start < 1.0
        assert again == added
        assert set(added) == {"growth", "schedule", "arm"}
        assert added["schedule"] == describe(added["growth"])


def test_target_relative_start_models() -> None:
    target = ModelConfig.from_shape("4x128")
    deep = plan_stages({"stages": [norm(stage("stack", 2, at=0.2))]}, target)
    assert deep[0].before.shape == "2x128" and deep[0].after.shape == "4x128"
    wide = plan_stages({"stages": [norm(stage("hypercloning", 2, at=0.2))]}, target)
    assert wide[0].before.shape == "4x64" and wide[0].before.n_heads == 1
    mlp = plan_stages({"stages": [norm(stage("net2net", 2, at=0.2, width="mlp"))]}, target)
    assert mlp[0].before.ff_dim == target.ff_dim // 2 and mlp[0].before.d_model == 128
    two = plan_stages(
        {"stages": [norm(stage("zero", 2, at=0.1)), norm(stage("stack", 2, at=0.3))]},
        ModelConfig.from_shape("8x128"),
    )
    assert [p.before.n_layers for p in two] == [2, 4]
    schedule = sample_to_schedule(
        {"stages": [norm(stage("staged_depth", 2, slope=-0.05, at=0.5))]}, target, BUDGET, SEQ
    )
    assert schedule.stages[0].trigger.slope == -0.05
    assert schedule.stages[0].trigger.max_at == 0.5


def norm(st: dict) -> dict:
    return normalize_sample({"stages": [st]})["stages"][0]


@pytest.mark.parametrize(
    ("sample", "target", "fix"),
    [
        ({"stages": [stage("stack", 4, at=0.2)]}, "2x128", "not divisible by 4"),
        ({"stages": [stage("nope", 2, at=0.2)]}, "4x128", "unknown growth operator"),
        ({"stages": [stage("stack", 2, at=1.5)]}, "4x128", "fraction of the budget"),
        ({"stages": [stage("stack", 2)]}, "4x128", "needs a trigger"),
        ({"stages": [stage("staged_width", 2, at=0.2)]}, "4x64", "pick a wider target"),
        ({"stages": [stage("stack", 2, at=0.2, opt_policy="bogus")]}, "4x128", "opt_policy"),
        ({"stages": [stage("random", 2, at=0.2, params={"ramp": 3})]}, "4x128", "no parameter"),
        ({"stage": []}, "4x128", "return only"),
    ],
)
def test_bad_samples_fail_with_one_line(sample: dict, target: str, fix: str) -> None:
    with pytest.raises(ConfigError) as err:
        sample_to_schedule(normalize_sample(sample), ModelConfig.from_shape(target), BUDGET, SEQ)
    assert fix in str(err.value)
    assert "\n" not in str(err.value)


def test_space_validation_names_the_bad_sample(tmp_path) -> None:
    path = tmp_path / "myspace.py"
    path.write_text(
        "def bad(trial):\n"
        "    op = trial.suggest_categorical('operator', ['stack', 'nonexistent'])\n"
        "    return {'stages': [{'operator': op, 'factor': 2, 'at': 0.2}]}\n"
        "def impure(trial):\n"
        "    import random\n"
        "    return {'stages': [{'operator': 'stack', 'factor': 2, 'at': random.random()}]}\n"
        "def dynamic(trial):\n"
        "    trial.suggest_categorical('k', [trial.number % 2])\n"
        "    return {'stages': []}\n"
        "def clash(trial):\n"
        "    trial.suggest_categorical('schedule', ['a'])\n"
        "    return {'stages': []}\n"
    )
    target = ModelConfig.from_shape("4x128")
    with pytest.raises(ConfigError, match="nonexistent"):
        validate_space(SpaceRef(resolve_space(f"{path}:bad")), target, BUDGET, SEQ)
    with pytest.raises(ConfigError, match="not a pure function"):
        validate_space(SpaceRef(resolve_space(f"{path}:impure")), target, BUDGET, SEQ)
    with pytest.raises(ConfigError, match="one fixed set of choices"):
        validate_space(SpaceRef(resolve_space(f"{path}:dynamic")), target, BUDGET, SEQ)
    with pytest.raises(ConfigError, match="rename them"):
        validate_space(SpaceRef(resolve_space(f"{path}:clash")), target, BUDGET, SEQ)
    with pytest.raises(ConfigError, match="has no function"):
        resolve_space(f"{path}:missing")
    with pytest.raises(ConfigError, match="unknown search space"):
        resolve_space("no_such_space")


def test_space_ref_pickles_by_spec(tmp_path) -> None:
    import pickle

    path = tmp_path / "s.py"
    path.write_text("def fn(trial):\n    return {'stages': []}\n")
    ref = SpaceRef(resolve_space(f"{path}:fn"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref(optuna.trial.FixedTrial({}))  # loaded once ...
    clone = pickle.loads(pickle.dumps(ref))  # ... but pickled as its spec only
    assert clone.spec == ref.spec and clone(optuna.trial.FixedTrial({}))["growth"] == {"stages": []}


# --------------------------------------------------------------------------- exhaustive grid
def test_grid_of_space_enumerates_categorical_choices() -> None:
    from raygrow.search.spaces import grid_of_space, grid_points

    grid = grid_of_space(SpaceRef("timing_factor"))
    assert grid == {"g": [2, 3, 4, 6], "grow_at": [0.15, 0.3, 0.5]}
    points = grid_points(grid)
    assert len(points) == 12 and len({tuple(p.values()) for p in points}) == 12
    for point in points:  # every grid point is a valid schedule on the space's target
        growth = SpaceRef("timing_factor").sample(optuna.trial.FixedTrial(point))
        sample_to_schedule(growth, target_of("timing_factor"), BUDGET, SEQ).validate(BUDGET, SEQ)


def test_grid_rejects_ranges_and_conditional_branches(tmp_path) -> None:
    from raygrow.search.spaces import grid_of_space

    with pytest.raises(ConfigError, match="from a range"):
        grid_of_space(SpaceRef("default"))
    cond = tmp_path / "cond.py"
    cond.write_text(
        "def fn(trial):\n"
        "    op = trial.suggest_categorical('operator', ['stack', 'zero'])\n"
        "    if op == 'zero':\n"
        "        trial.suggest_categorical('zero.init', ['copy', 'random'])\n"
        "    return {'stages': [{'operator': op, 'factor': 2, 'at': 0.2}]}\n"
    )
    with pytest.raises(ConfigError, match="conditional"):
        grid_of_space(SpaceRef(f"{cond}:fn"))
