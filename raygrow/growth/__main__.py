"""`python -m raygrow.growth list | check`: operator catalogue and function-preservation check.

    python -m raygrow.growth list [--json]
    python -m raygrow.growth check --op NAME [--param k=v ...] [--from LxD] [--heads H]
        [--kv-heads K] [--tied] [--train-steps N] [--opt-policy carry|reset|scale]
        [--checkpoint PATH] [--seed S] [--json]

`check` grows a fresh tiny model (trained `--train-steps` AdamW steps on a toy Markov stream so
the check is not trivial) or a training checkpoint, and prints loss before/after, the max logit
difference, parameter counts and whether the optimizer state matches the new FQNs. Exit codes:
0 ok; 2 bad input (one line on stderr); 1 an operator that claims FP changed the loss by more
than --tol, or optimizer state that does not match the grown parameters.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from raygrow.checkpoint import read_model
from raygrow.errors import ConfigError, cli_entry
from raygrow.growth import OPERATORS, OPT_POLICIES, GrowthState, get_operator
from raygrow.growth.check import (
    check_operator,
    fresh_state,
    toy_batch_fn,
    toy_config,
    train_briefly,
)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`k=v` pairs; values are JSON when they parse (2, 0.5, [0,0,1,1], null), else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param {pair!r} is not key=value, e.g. --param factor=2")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m raygrow.growth", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="print operators: axes, params (defaults), FP claim")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ck = sub.add_parser("check", help="grow a tiny model or a checkpoint and report")
    ck.add_argument("--op", required=True, help="operator name (see `list`)")
    ck.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="K=V",
        help="operator param, repeatable; JSON values (factor=2, layer_map=[0,0,1,1])",
    )
    ck.add_argument("--from", dest="shape", default="2x64", help="fresh model size LxD")
    ck.add_argument("--heads", type=int, default=2, help="query heads of the fresh model")
    ck.add_argument("--kv-heads", type=int, default=None, help="kv heads (GQA) of the fresh model")
    ck.add_argument("--tied", action="store_true", help="tie embeddings in the fresh model")
    ck.add_argument(
        "--train-steps",
        type=int,
        default=20,
        help="AdamW steps on toy data before growing a fresh model",
    )
    ck.add_argument("--opt-policy", default="carry", choices=OPT_POLICIES)
    ck.add_argument("--checkpoint", default=None, help="grow this training checkpoint instead")
    ck.add_argument("--seed", type=int, default=0)
    ck.add_argument("--tol", type=float, default=1e-4, help="loss tolerance for FP claims")
    ck.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def cmd_list(args: argparse.Namespace) -> int:
    rows = [op.describe() for op in OPERATORS.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['name']:<13} {'+'.join(row['axes']):<12} FP: {row['fp']}")
        print(f"    {row['summary']}")
        params = ", ".join(f"{k}={json.dumps(v['default'])}" for k, v in row["params"].items())
        print(f"    params: {params}")
        print(f"    opt_policy=scale: {row['scale_policy']}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    op = get_operator(args.op)
    params = parse_params(args.param)
    if args.checkpoint:
        state = GrowthState(*read_model(args.checkpoint))
    else:
        config = toy_config(
            args.shape, n_heads=args.heads, n_kv_heads=args.kv_heads, tie_embeddings=args.tied
        )
        state = fresh_state(config, seed=args.seed)
    op.resolve(state.config, params)  # bad params -> exit 2 before any compute
    seq = min(32, state.config.max_seq_len)
    batches = toy_batch_fn(state.config.vocab_size, batch=8, seq_len=seq, seed=args.seed)
    if not args.checkpoint and args.train_steps > 0:
        state, _ = train_briefly(state, batches, args.train_steps)
    probe = batches(5_000)  # same chain, a batch that training never saw
    _, s = check_operator(
        state, op.name, params, args.opt_policy, args.seed, probe, lambda i: batches(10_000 + i)
    )
    delta = s["loss_after"] - s["loss_before"]
    fp_ok = not s["fp_claimed"] or abs(delta) <= args.tol
    optim = s["optim"]
    optim_ok = args.opt_policy == "reset" or (optim["keys_match"] and optim["shapes_match"])
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        before, after = s["config_before"], s["config_after"]
        print(
            f"operator    {s['operator']} ({'+'.join(s['axes'])}), params {json.dumps(s['params'])}"
        )
        print(
            f"model       {before['n_layers']}x{before['d_model']} ({s['n_params_before']:,} "
            f"params) -> {after['n_layers']}x{after['d_model']} ({s['n_params_after']:,})"
        )
        print(
            f"loss        {s['loss_before']:.6f} -> {s['loss_after']:.6f} (delta {delta:+.2e}); "
            f"FP claimed: {'yes' if s['fp_claimed'] else 'no'}"
        )
        print(f"max |dlogit| {s['max_logit_diff']:.3e}")
        print(
            f"optimizer   {args.opt_policy}: {optim['entries']} entries, keys match new FQNs: "
            f"{'yes' if optim['keys_match'] else 'no'}, shapes match: "
            f"{'yes' if optim['shapes_match'] else 'no'}, steps {optim['steps']}"
        )
        if s["directives"]:
            print(f"directives  {json.dumps(s['directives'])}")
        if s["extras"]:
            print(f"extras      {json.dumps(s['extras'])}")
        print(f"time        {s['seconds']:.3f} s")
    if not fp_ok:
        print(
            f"FAIL: {s['operator']} claims FP but the loss changed by {delta:+.2e}", file=sys.stderr
        )
    if not optim_ok:
        print("FAIL: optimizer state does not match the grown parameters", file=sys.stderr)
    return 0 if fp_ok and optim_ok else 1


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cmd_list(args) if args.command == "list" else cmd_check(args)


if __name__ == "__main__":
    sys.exit(main())
