"""Files the writer attaches to runs: a trial's loss-vs-FLOPs PNG and the ranked table's files.

Here rather than in `raygrow.analysis` so that tracking never imports analysis (analysis reads
what tracking writes, and reuses `to_markdown`). The writer imports this module lazily:
matplotlib and pandas cost about 1.5 s to import.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def loss_curve_figure(curve: dict[str, list], title: str) -> Figure:
    """val_loss vs FLOPs of one run (`reader.run_curve`), growth events as red dotted lines."""
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    # fixed margins: tight_layout costs ~1 s per figure with log axes on a busy CPU
    ax = fig.add_axes((0.11, 0.12, 0.85, 0.8))
    ax.plot(curve["flops"], curve["val_loss"], marker=".", lw=1.2, label="val_loss")
    for tokens, flops in curve["growth"]:
        ax.axvline(flops, color="tab:red", ls=":", lw=1)
        ax.annotate(
            f"grow @ {tokens:.3g} tok",
            (flops, 0.03),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            color="tab:red",
            rotation=90,
            va="bottom",
            ha="right",
        )
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("val_loss (nats/token)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return fig


def to_pandas(table: Any) -> pd.DataFrame:
    """A DataFrame, a pyarrow Table or anything `pd.DataFrame` takes -> DataFrame."""
    if isinstance(table, pd.DataFrame):
        return table
    if hasattr(table, "to_pandas"):  # pyarrow.Table
        return table.to_pandas()
    return pd.DataFrame(table)


def write_ranked_table(df: pd.DataFrame, folder: Path) -> None:
    """`ranked.csv`, `ranked.parquet` and `ranked.md` in `folder`."""
    df.to_csv(folder / "ranked.csv", index=False)
    df.to_parquet(folder / "ranked.parquet", index=False)
    (folder / "ranked.md").write_text(to_markdown(df) + "\n")


def to_markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub-flavoured Markdown table (no `tabulate` needed); NaN/None shown as `–`."""
    if df.empty:
        return "_(no rows)_"
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v, floatfmt) for v in row) + " |")
    return "\n".join(lines)


def _cell(value: Any, floatfmt: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return format(value, floatfmt)
    if isinstance(value, list | tuple):
        return f"[{len(value)} values]"
    return str(value).replace("|", "\\|").replace("\n", " ")
