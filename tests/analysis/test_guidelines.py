"""Guidelines: speedups and validity on known curves, the timing fit on a planted power law, and
the whole `python -m raygrow.guidelines` path on runs logged through SearchTracker."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures.mlflow_store import sqlite_store
from fixtures.synthetic import Plan, log_search

from raygrow.analysis import fit as F
from raygrow.analysis.speedups import add_speedups, validity
from raygrow.guidelines import main
from raygrow.model import ModelConfig
from raygrow.tracking import SearchTracker


def row(arm: str, flops: float, loss: float, seed: int = 0, **kw) -> dict:
    base = {
        "experiment": "e",
        "trial_id": f"{arm}-{flops:g}-{seed}",
        "arm": arm,
        "status_kind": "completed",
        "seed": seed,
        "flops": flops,
        "val_loss": loss,
        "budget_tokens": flops / 1e6,
        "n_params": 1e5,
        "growth_tokens": math.nan,
        "factor": math.nan,
        "operator": "none",
        "speedup_bound": "",
    }
    return {**base, **kw}


# annealed scratch at 3 budgets, 0.1 nats per doubling of compute
SCRATCH = [row("scratch", 1e12, 2.0), row("scratch", 2e12, 1.9), row("scratch", 4e12, 1.8)]


def test_speedup_interpolation_and_scratch_full_budget_is_one() -> None:
    df = pd.DataFrame(
        SCRATCH
        + [
            row("grown", 2e12, 1.85, budget_tokens=4e6, growth_tokens=1e5),  # half-way in log C
            row("grown", 3.5e12, 1.75, budget_tokens=4e6, growth_tokens=2e5),  # beats all
            row("small", 4e12, 1.95),
        ]
    )
    out = add_speedups(df).set_index("trial_id")
    assert out.at["scratch-4e+12-0", "speedup_vs_scratch"] == 1.0  # exactly
    assert out.at["scratch-1e+12-0", "speedup_vs_scratch"] == 1.0
    grown = out.loc["grown-2e+12-0"]
    assert grown["speedup_vs_scratch"] == pytest.approx(math.sqrt(2))
    assert grown["scratch_flops_at_loss"] == pytest.approx(2e12 * math.sqrt(2))
    assert grown["speedup_bound"] == "exact"
    assert grown["speedup_basis"] == "paired (seed 0)"
    beyond = out.loc["grown-3.5e+12-0"]
    assert (beyond["speedup_bound"], beyond["speedup_vs_scratch"]) == ("lower", 4 / 3.5)
    # the small model: 1.95 is half-way between 1e12 and 2e12 -> sqrt(2)e12 / 4e12
    assert out.at["small-4e+12-0", "speedup_vs_scratch"] == pytest.approx(math.sqrt(2) / 4)


def test_test_split_speedup_uses_test_finals_only() -> None:
    """Test-split speedups compare test finals with test finals; runs without one get none."""
    scratch = [{**r, "test_loss": r["val_loss"] + 0.05} for r in SCRATCH]
    grown = row("grown", 2e12, 1.85, budget_tokens=4e6, growth_tokens=1e5, test_loss=1.90)
    untested = row("grown", 2e12, 1.85, seed=0, growth_tokens=2e5)
    out = add_speedups(pd.DataFrame([*scratch, grown, {**untested, "trial_id": "u"}]))
    out = out.set_index("trial_id")
    g = out.loc["grown-2e+12-0"]
    # val 1.85 and test 1.90 both sit half-way between the 1e12 and 2e12 scratch finals
    assert g["speedup_vs_scratch"] == pytest.approx(math.sqrt(2))
    assert g["speedup_test_vs_scratch"] == pytest.approx(math.sqrt(2))
    assert g["speedup_test_bound"] == "exact"
    assert math.isnan(out.at["u", "speedup_test_vs_scratch"])


def test_longer_scratch_budgets_measure_what_was_a_bound() -> None:
    """A grown run beating the full-budget scratch run is a lower bound with a frontier that ends
    at the budget, and a measured speedup once scratch also ran at 2x (fractions are relative
    to the search's budget, the small arm's, not to the longest scratch run)."""
    small = row("small", 2e12, 1.95, budget_tokens=4e6)
    grown = row("grown", 2e12, 1.75, budget_tokens=4e6, growth_tokens=1e5)
    bounded = add_speedups(pd.DataFrame([*SCRATCH, small, grown])).set_index("trial_id")
    assert bounded.at["grown-2e+12-0", "speedup_bound"] == "lower"
    longer = row("scratch", 8e12, 1.7, budget_tokens=8e6)
    out = add_speedups(pd.DataFrame([*SCRATCH, longer, small, grown])).set_index("trial_id")
    g = out.loc["grown-2e+12-0"]
    assert g["speedup_bound"] == "exact"  # 1.75: half-way between 4e12 and 8e12 in log C
    assert g["speedup_vs_scratch"] == pytest.approx(math.sqrt(2) * 4e12 / 2e12)
    v = validity(pd.DataFrame([*SCRATCH, longer, small])).iloc[0]
    assert v["scratch_loss"] == 1.8  # the full budget's run, not the 2x one


def test_seed_pairing_and_pooling() -> None:
    s1 = [row("scratch", f, v + 0.02, seed=1) for f, v in ((1e12, 2.0), (2e12, 1.9), (4e12, 1.8))]
    df = pd.DataFrame(
        SCRATCH
        + s1
        + [
            row("grown", 2e12, 1.87, seed=1, growth_tokens=1),
            row("grown", 2e12, 1.86, seed=7, growth_tokens=1),  # no scratch with seed 7
        ]
    )
    out = add_speedups(df).set_index("trial_id")
    paired = out.loc["grown-2e+12-1"]
    assert paired["speedup_basis"] == "paired (seed 1)"
    assert paired["speedup_vs_scratch"] == pytest.approx(math.sqrt(2))  # 1.87 = mid of 1.92/1.82
    pooled = out.loc["grown-2e+12-7"]
    assert pooled["speedup_basis"] == "pooled (2 seeds)"  # seed-mean frontier 2.01/1.91/1.81
    assert pooled["speedup_vs_scratch"] == pytest.approx(math.sqrt(2))
    assert out.at["scratch-4e+12-1", "speedup_vs_scratch"] == 1.0


def test_validity_margin_vs_seed_noise() -> None:
    single = pd.DataFrame(SCRATCH + [row("small", 4e12, 1.83)])
    v = validity(single).iloc[0]
    assert v["valid"] and v["note"] == "single seed" and v["margin"] == pytest.approx(0.03)
    seeds = pd.DataFrame(
        [row("scratch", 4e12, 1.80, seed=0), row("scratch", 4e12, 1.81, seed=1)]
        + [row("small", 4e12, 1.83, seed=0), row("small", 4e12, 1.86, seed=1)]
    )
    v = validity(seeds).iloc[0]
    noise = np.std([1.83, 1.86], ddof=1)
    assert v["seed_noise"] == pytest.approx(noise)
    assert v["margin"] == pytest.approx(0.04)
    assert v["valid"] == (0.04 > 2 * noise)
    assert not validity(pd.DataFrame(SCRATCH)).iloc[0]["valid"]  # no small arm: unknown
    # by group: the seeds of two searches of one group pooled (one seed each alone)
    split = seeds.assign(experiment=["a", "b", "a", "b"], group="4x64@5")
    assert len(validity(split)) == 2 and set(validity(split)["note"]) == {"single seed"}
    pooled = validity(split, by="group").iloc[0]
    assert pooled["group"] == "4x64@5" and pooled["n_seeds_small"] == 2
    assert pooled["seed_noise"] == pytest.approx(noise) and pooled["valid"] == v["valid"]


def synthetic_groups(truth: dict, form: str, noise: float, seed: int = 0) -> pd.DataFrame:
    """Trials whose seed-mean speedup peaks (as a parabola in log10 d) at the planted d*."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in (1e6, 4e6, 1.6e7):
        for tok_per_param in (20, 80, 320):
            budget = n * tok_per_param
            c = 6 * n * budget
            x = {"a": math.log10(n), "c": 1.0}
            x["b"] = 1 / math.log10(c) if form == "gstack" else math.log10(c)
            log_d_star = sum(truth[k] * x[k] for k in "abc") + rng.normal(0, noise)
            for offset in (-0.6, -0.3, 0.0, 0.3, 0.6):
                for s in range(3):
                    sp = 1.5 - 0.5 * (offset - rng.uniform(-0.05, 0.05)) ** 2
                    rows.append(
                        row("grown", 1e12, 1.0, seed=s, n_params=n, budget_tokens=budget,
                            growth_tokens=10 ** (log_d_star + offset),
                            speedup_vs_scratch=sp + rng.normal(0, 0.003))
                    )  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("form", "truth"),
    [("gstack", {"a": 0.88, "b": 40.0, "c": -4.0}), ("powerlaw", {"a": 0.6, "b": 0.3, "c": -3.5})],
)
def test_fit_recovers_a_planted_power_law(form: str, truth: dict) -> None:
    groups = F.timing_groups(synthetic_groups(truth, form, noise=0.01))
    assert len(groups) == 9
    res = F.fit_timing(groups, form=form, n_boot=200)
    assert res.ok, res.note
    assert res.coef["a"] == pytest.approx(truth["a"], abs=0.05)
    assert res.ci["a"][0] - 0.02 <= truth["a"] <= res.ci["a"][1] + 0.02
    tol_b = 6.0 if form == "gstack" else 0.05  # 1/log10 C spans little: b is loosely determined
    assert res.coef["b"] == pytest.approx(truth["b"], abs=tol_b)
    assert res.ci["a"][0] < res.coef["a"] < res.ci["a"][1]
    table = res.table()
    assert list(table["fitted"]) == [True, True, True]
    if form == "gstack":
        assert list(table["gstack"]) == [0.88, 163.27, -5.74]


def test_optimal_timing_parabola_and_edges() -> None:
    x = np.log10([1e4, 2e4, 4e4, 8e4])
    true = math.log10(3e4)
    y = 2 - (x - true) ** 2
    d, edge, k = F.optimal_timing(x, y)
    assert (edge, k) == (False, 4) and d == pytest.approx(true)
    d, edge, _ = F.optimal_timing(x, x)  # increasing: best at the last timing, a bound
    assert edge and d == pytest.approx(x[-1])


def test_too_few_groups_says_so_instead_of_fitting() -> None:
    truth = {"a": 0.88, "b": 40.0, "c": -4.0}
    df = synthetic_groups(truth, "gstack", 0.0)
    two = df[df["n_params"].isin([1e6]) & df["budget_tokens"].isin([2e7, 8e7])]
    res = F.fit_timing(F.timing_groups(two), n_boot=10)
    assert not res.ok and "Too few runs" in res.note and res.coef == {}
    # one target size, three budgets: the N exponent is left out, and said so
    one_n = df[df["n_params"] == 1e6]
    res = F.fit_timing(F.timing_groups(one_n), n_boot=10)
    assert res.ok and "a" not in res.coef and "not identifiable" in res.note
    assert F.gstack_growth_tokens(7e9, 6 * 7e9 * 2e12) == pytest.approx(11.11e9, rel=2e-3)


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, int]]:
    """Three small synthetic searches (different N and budget) in one SQLite store."""
    uri = sqlite_store(tmp_path_factory.mktemp("guidelines") / "store")
    counts = {}
    plans = {
        "s-2x64": Plan(ModelConfig(n_layers=2, d_model=64, n_heads=2), 1_000_000, 0.15),
        "s-4x64": Plan(ModelConfig(n_layers=4, d_model=64, n_heads=2), 3_000_000, 0.2),
        "s-4x96": Plan(ModelConfig(n_layers=4, d_model=96, n_heads=2), 2_000_000, 0.1),
    }
    for i, (name, plan) in enumerate(plans.items()):
        runs = log_search(
            SearchTracker(uri, name), plan, seeds=(0,), timings=(0.05, 0.15, 0.4),
            scratch_budgets=(0.5, 1.0), n_evals=4, stopped=int(i == 0), rng_seed=i,
        )  # fmt: skip
        counts[name] = len(runs)
    return uri, counts


def test_guidelines_cli_on_one_search_tables_plots_and_too_few(logged, tmp_path: Path) -> None:
    uri, counts = logged
    out = tmp_path / "g1"
    assert main(["--experiment", "s-2x64", "--tracking-uri", uri, "--out", str(out),
                 "--bootstrap", "50"]) == 0  # fmt: skip
    for name in ("trials", "validity", "timing_groups", "timing_fit", "factors", "operators"):
        for ext in ("csv", "parquet", "md"):
            assert (out / f"{name}.{ext}").stat().st_size > 0, (name, ext)
    assert (out / "validity.tex").exists()
    pngs = ["loss_vs_flops_s-2x64", "speedup_heatmap_s-2x64", "speedup_vs_time"]
    pngs += ["speedup_vs_tokens_per_param", "timing_fit_g2_stack"]
    for png in pngs:
        assert (out / "plots" / f"{png}.png").read_bytes()[:4] == b"\x89PNG", png
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == counts["s-2x64"] == 2 + 1 + 3
    expected = [
        "experiment",
        "trial_id",
        "run_id",
        "arm",
        "status",
        "seed",
        "operator",
        "factor",
        "growth_tokens",
        "budget_tokens",
        "n_params",
        "c_6nd",
        "flops",
        "val_loss",
        "speedup_vs_scratch",
        "speedup_bound",
        "speedup_basis",
        "params.operator",
    ]
    assert set(expected) <= set(trials.columns)
    assert sorted(trials["arm"]) == ["grown"] * 3 + ["scratch"] * 2 + ["small"]
    assert (trials["status"].str.startswith("stopped by ASHA")).sum() == 1
    full = trials[(trials["arm"] == "scratch") & (trials["budget_tokens"] == 1_000_000)]
    assert full["speedup_vs_scratch"].tolist() == [1.0]  # exactly
    grown = trials[trials["arm"] == "grown"].sort_values("growth_tokens")
    assert grown["growth_tokens"].tolist() == [50_000, 150_000, 400_000]  # from growth events
    assert set(grown["factor"]) == {2.0} and set(grown["operator"]) == {"stack"}
    # Parquet keeps the curves as list columns; the long table has every point
    pt = pq.read_table(out / "trials.parquet")
    assert pa.types.is_list(pt.schema.field("curve_flops").type)
    curves = pd.read_csv(out / "curves.csv")
    assert len(curves) == sum(len(c) for c in pt.column("curve_val_loss").to_pylist())
    # one (N, C) group: no fit, and the report says so without inventing numbers
    md = (out / "guidelines.md").read_text()
    assert "Too few runs to fit the timing guideline" in md
    assert "N exponent a =" not in md
    fit = pd.read_csv(out / "timing_fit.csv")
    assert not fit["fitted"].any()
    groups = pd.read_csv(out / "timing_groups.csv")
    assert len(groups) == 1 and groups["gstack_d_over_budget"].iloc[0] > 1000  # far outside


def test_guidelines_cli_on_three_searches_keeps_bounds_as_bounds(
    logged, tmp_path: Path, capsys
) -> None:
    """These searches' grown runs mostly beat every scratch budget (lower bounds): the guideline
    table flags them and the timing law refuses to fit bounds as values."""
    uri, counts = logged
    out = tmp_path / "g3"
    args = ["--tracking-uri", uri, "--out", str(out), "--bootstrap", "100"]
    for exp in counts:
        args += ["--experiment", exp]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "give only a bound on d*" in printed and "timing fit (gstack" not in printed
    assert len(pd.read_parquet(out / "trials.parquet")) == sum(counts.values())
    table = pd.read_csv(out / "guidelines.csv")
    assert len(table) == 3 and set(table["criterion"]) == {"speedup"}
    lower = table[table["speedup_bound"] == "lower"]
    assert len(lower) and lower["speedup_ci_high"].isna().all()  # no upper end for a bound
    md = (out / "guidelines.md").read_text()
    assert "## Guideline: best growth time per (group, factor, operator)" in md
    assert ">1." in md  # bounds printed as bounds
    assert len(pd.read_csv(out / "validity.csv")) == 3
    # each row carries its group's validity verdict (what the warm start filters on)
    by_group = validity(pd.read_parquet(out / "trials.parquet"), by="group")
    verdicts = dict(zip(by_group["group"], by_group["valid"], strict=True))
    written = [None if pd.isna(v) else bool(v) for v in table["valid"]]  # None: unknown
    assert written == [verdicts[g] for g in table["group"]]
    # the committed-table path reproduces the same guideline table from trials.parquet alone
    again = tmp_path / "again"
    assert main(["--runs-table", str(out / "trials.parquet"), "--out", str(again),
                 "--bootstrap", "100"]) == 0  # fmt: skip
    pd.testing.assert_frame_equal(pd.read_csv(again / "guidelines.csv"), table)


def test_runs_table_fits_each_factor_operator_family(tmp_path: Path, capsys) -> None:
    """Two factors with different planted optima: fitted per family, never pooled."""
    truth = {"a": 0.6, "b": 0.3, "c": -3.5}
    one = synthetic_groups(truth, "powerlaw", noise=0.0).assign(factor=2.0, operator="stack")
    two = synthetic_groups({**truth, "c": -3.2}, "powerlaw", noise=0.0, seed=1)
    two = two.assign(factor=4.0, operator="stack")
    runs = pd.concat([one, two], ignore_index=True).assign(speedup_bound="exact")
    runs["trial_id"] = [f"t{i}" for i in range(len(runs))]
    runs = runs.drop(columns=["speedup_vs_scratch"]).assign(
        speedup_vs_scratch=pd.concat([one, two], ignore_index=True)["speedup_vs_scratch"]
    )
    res = F.fit_families(F.timing_groups(runs), form="powerlaw", n_boot=50)
    assert set(res) == {(2.0, "stack"), (4.0, "stack")}
    assert res[(2.0, "stack")].coef["c"] == pytest.approx(-3.5, abs=0.05)
    assert res[(4.0, "stack")].coef["c"] == pytest.approx(-3.2, abs=0.05)
    from raygrow.analysis.cells import guideline_table, timing_cells

    table = guideline_table(timing_cells(runs))
    assert len(table) == 2 * 9 and set(table["factor"]) == {2.0, 4.0}
    assert (table["n_seeds"] == 3).all() and (table["speedup_ci_low"] < table["speedup_mean"]).all()


def test_runs_table_missing_columns_exits_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "runs.parquet"
    pd.DataFrame({"experiment": ["e"], "arm": ["grown"]}).to_parquet(bad)
    with pytest.raises(SystemExit) as exc:
        main(["--runs-table", str(bad), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lacks columns status_kind, seed" in err
    assert not (tmp_path / "o").exists()


def test_guidelines_cli_bad_input_exits_2(logged, tmp_path: Path, capsys) -> None:
    uri, _ = logged
    with pytest.raises(SystemExit) as exc:
        main(["--experiment", "nope", "--tracking-uri", uri, "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "experiment 'nope' not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--experiment", "x", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"])
    assert exc.value.code == 2


def test_collect_has_a_test_loss_column_nan_when_absent(tmp_path: Path) -> None:
    """`test_loss` (the held-out split, logged once at a run's end) is a trials column; a run
    without it (stopped, or from before the split) gets NaN."""
    from raygrow.analysis.collect import collect_runs

    uri = sqlite_store(tmp_path / "store")
    tracker = SearchTracker(uri, "held-out")
    tracker.start_search({"space": "x"}, {})
    for trial, final in (("done", {"test_loss": 2.25, "test_bpb": 3.2}), ("stopped", {})):
        tracker.trial_run(trial, {"seed": 0}, "grown")
        for step, loss in ((100, 3.0), (200, 2.5)):
            extra = final if step == 200 else {}
            tracker.log_metrics(trial, {"val_loss": loss, "tokens": step, **extra}, step)
        tracker.finish_trial(trial, "completed" if final else "stopped by ASHA", {}, {})
    trials, _ = collect_runs(uri, ["held-out"])
    ids, losses = trials.column("trial_id").to_pylist(), trials.column("test_loss").to_pylist()
    got = dict(zip(ids, losses, strict=True))
    assert got["done"] == 2.25 and math.isnan(got["stopped"])
    assert trials.schema.field("test_loss").type == pa.float64()
