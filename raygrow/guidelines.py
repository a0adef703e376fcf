"""`python -m raygrow.guidelines`: fit growth guidelines from the MLflow runs of past searches.

    python -m raygrow.guidelines --experiment NAME [--experiment NAME2 ...] \
        [--tracking-uri URI] [--out DIR] [--bootstrap 1000] [--form gstack|powerlaw]

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
    p.add_argument(
        "--experiment", action="append", required=True, help="MLflow experiment (repeatable)"
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
    uri = resolve_uri(args.tracking_uri, args.experiment[0])
    out = Path(args.out or Path("raygrow_runs") / args.experiment[0] / "guidelines")
    # here, not at the top: pandas and matplotlib take ~1.5 s, bad flags fail before that
    from raygrow.analysis.report import fit_guidelines

    summary = fit_guidelines(
        uri, args.experiment, out, n_boot=max(1, args.bootstrap), form=args.form, seed=args.seed
    )
    print(f"{summary['n_trials']} trials from {', '.join(args.experiment)} -> {out.resolve()}")
    if summary["fit_ok"]:
        coef = ", ".join(
            f"{k}={v:.3g} [{summary['ci'][k][0]:.3g}, {summary['ci'][k][1]:.3g}]"
            for k, v in summary["coef"].items()
        )
        print(f"timing fit ({args.form}): {coef}")
    else:
        print(summary["fit_note"])
    print(f"report: {out.resolve() / 'guidelines.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
