"""``python -m raygrow.data``: prepare token shards, or describe a prepared folder.

    python -m raygrow.data prepare --source default|PATH|GLOB|FILE.parquet:COLUMN \
        [--tokenizer byte|bpe:V] [--val-fraction F] [--test-fraction F] [--split-seed S] \
        [--out DIR] [--smoke-test]
    python -m raygrow.data info DIR

Exit codes: 0 success, 2 bad input (one line on stderr), 1 failure during the run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from raygrow.errors import ConfigError, cli_entry


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError, so flag errors also give exit code 2 and one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{message} (see python -m {self.prog} -h)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="raygrow.data", description="raygrow data preparation.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("prepare", help="tokenize a text source into Parquet shards + manifest")
    p.add_argument(
        "--source",
        default="default",
        help="'default' (embedded corpus), a text file, a folder, a glob, or FILE.parquet:COLUMN",
    )
    p.add_argument("--tokenizer", default="byte", help="byte (default) or bpe:V, e.g. bpe:4096")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="share of documents held out for validation (user sources; default 0.02)",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        help="share of documents held out for the final test (user sources; default 0.02)",
    )
    p.add_argument("--split-seed", type=int, default=0, help="seed of the document split")
    p.add_argument("--out", default=None, help="output folder (default raygrow_runs/data/NAME)")
    p.add_argument(
        "--smoke-test", action="store_true", help="tiny subset (~1 MB train), same code path"
    )
    i = sub.add_parser("info", help="verify a prepared folder and print its summary")
    i.add_argument("folder", help="a folder written by prepare")
    return parser


def _summary(folder: object, manifest: object, seconds: float | None = None) -> str:
    from raygrow.data.shards import Manifest

    assert isinstance(manifest, Manifest)
    took = f" in {seconds:.1f}s" if seconds is not None else ""
    parts = ", ".join(
        f"{name} {s.tokens:,} tokens / {s.documents} docs / {s.text_bytes:,} bytes"
        for name, s in ((n, manifest.splits[n]) for n in ("train", "val", "test"))
    )
    return (
        f"{manifest.source} [{manifest.tokenizer}, vocab {manifest.vocab_size}] -> {folder}: "
        f"{parts}, sha256 {manifest.content_sha256[:12]}{took}"
    )


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "prepare":
        from raygrow.data.prepare import prepare

        start = time.perf_counter()
        folder, manifest = prepare(
            args.source,
            args.out,
            tokenizer=args.tokenizer,
            val_fraction=args.val_fraction,
            split_seed=args.split_seed,
            smoke_test=args.smoke_test,
            test_fraction=args.test_fraction,
        )
        print("prepared " + _summary(folder, manifest, time.perf_counter() - start))
    else:
        from raygrow.data.loader import TokenData

        data = TokenData.open(args.folder)
        print("ok " + _summary(data.path, data.manifest))
    return 0


if __name__ == "__main__":
    # Re-import under the package name so error lines say "raygrow.data: error: ..." (cli_entry
    # derives the program name from the function's module, which is "__main__" here).
    from raygrow.data.__main__ import main as _main

    sys.exit(_main())
