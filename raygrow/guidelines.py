"""`python -m raygrow.guidelines`: fit growth guidelines from the MLflow runs of past searches.

    python -m raygrow.guidelines --experiment NAME [--experiment NAME2 ...] \
        [--tracking-uri URI] [--out DIR] [--bootstrap 1000] [--form gstack|powerlaw]
    python -m raygrow.guidelines --runs-table runs.parquet --out DIR

--runs-table reads a committed table of trials (one row per trial: experiment, arm, status_kind,
seed, operator, factor, growth_tokens, budget_tokens, n_params, flops, val_loss; optional
target, group, test_loss, speedup_bound) instead of MLflow, so a study's guideline table can be
reproduced from the table alone.

The MLflow store: --tracking-uri, else $MLFLOW_TRACKING_URI, else
./raygrow_runs/<first experiment>/mlflow.db.

Reads every trial run (tag raygrow.role=trial) of the experiments, computes each trial's speedup
at matched loss against its search's annealed scratch arms, checks validity, fits the growth
timing guideline with bootstrap intervals (or says why it cannot), ranks factors and operators,
and writes tables (CSV, Parquet, Markdown, LaTeX) and PNG plots to --out; see
`raygrow.analysis.report` for the file list. Exit codes: 0 ok, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raygrow.errors import ConfigError, cli_entry
from raygrow.tracking import (
    check_reachable,
    default_tracking_uri,
    resolve_tracking_uri,
    sqlite_path,
    tracking_uri_origin,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m raygrow.guidelines", description=__doc__.split("\n")[0]
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--experiment", action="append", help="MLflow experiment (repeatable)")
    src.add_argument(
        "--runs-table", help="a runs table (.parquet or .csv) to analyse instead of MLflow"
    )
    p.add_argument(
        "--tracking-uri",
        help="MLflow store; precedence: this flag, else $MLFLOW_TRACKING_URI, else the sqlite "
        "store ./raygrow_runs/<first experiment>/mlflow.db",
    )
    p.add_argument("--out", help="output folder (default ./raygrow_runs/<experiment>/guidelines)")
    p.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap replicates (default 1000)"
    )
    p.add_argument(
        "--form", choices=("gstack", "powerlaw"), default="gstack", help="timing law form"
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed")
    return p.parse_args(argv)


def resolve_uri(uri: str | None, experiment: str) -> str:
    """`--tracking-uri`, else $MLFLOW_TRACKING_URI, else ./raygrow_runs/<experiment>/mlflow.db."""
    origin = tracking_uri_origin(uri)
    uri = resolve_tracking_uri(uri, default_tracking_uri(Path("raygrow_runs") / experiment))
    assert uri is not None
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///") :]).resolve())  # reading: cwd is fine
    check_reachable(uri, origin=origin)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise ConfigError(f"no MLflow store at {db}; pass the search's --tracking-uri")
    return uri


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap {args.bootstrap} must be >= 0")
    n_boot = max(1, args.bootstrap)
    if args.runs_table:
        table = Path(args.runs_table)
        if not table.is_file():
            raise ConfigError(f"--runs-table {table} does not exist; pass the study's runs.parquet")
        out = Path(args.out or table.parent / "guidelines")
        from raygrow.analysis.report import guidelines_from_runs_table

        summary = guidelines_from_runs_table(
            table, out, n_boot=n_boot, form=args.form, seed=args.seed
        )
        source = str(table)
    else:
        uri = resolve_uri(args.tracking_uri, args.experiment[0])
        out = Path(args.out or Path("raygrow_runs") / args.experiment[0] / "guidelines")
        # here, not at the top: pandas and matplotlib take ~1.5 s, bad flags fail before that
        from raygrow.analysis.report import fit_guidelines

        summary = fit_guidelines(
            uri, args.experiment, out, n_boot=n_boot, form=args.form, seed=args.seed
        )
        source = ", ".join(args.experiment)
    print(f"{summary['n_trials']} trials from {source} -> {out.resolve()}")
    for family, fit in summary["fits"].items():
        if fit.ok:
            coef = ", ".join(
                f"{k}={v:.3g} [{fit.ci[k][0]:.3g}, {fit.ci[k][1]:.3g}]" for k, v in fit.coef.items()
            )
            print(f"timing fit ({args.form}, {family}): {coef}")
        else:
            print(f"{family}: {fit.note}")
    print(f"guideline table: {out.resolve() / 'guidelines.csv'}")
    print(f"report: {out.resolve() / 'guidelines.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
