"""Table writers: CSV, Parquet and Markdown for every table, LaTeX where it is cheap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

# one Markdown writer for the search's ranked table (written by tracking) and the reports here
from raygrow.tracking.render import to_markdown

__all__ = ["to_markdown", "write_table"]


def _list_columns(df: pd.DataFrame) -> list[str]:
    """Columns holding lists/arrays (Parquet keeps them; CSV/Markdown drop them)."""
    out = []
    for col in df.columns:
        sample = df[col].dropna()
        if len(sample) and isinstance(sample.iloc[0], list | tuple | np.ndarray):
            out.append(col)
    return out


def write_table(
    df: pd.DataFrame, out_dir: str | Path, name: str, *, latex: bool = False
) -> list[Path]:
    """Write `name`.csv/.parquet/.md (and .tex when asked and jinja2 is there)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    flat = df.drop(columns=_list_columns(df))
    paths = [out_dir / f"{name}.csv", out_dir / f"{name}.parquet", out_dir / f"{name}.md"]
    flat.to_csv(paths[0], index=False)
    df.to_parquet(paths[1], index=False)
    paths[2].write_text(to_markdown(flat) + "\n")
    if latex:
        try:
            tex = flat.to_latex(index=False, float_format=lambda v: f"{v:.4g}", na_rep="--")
        except ImportError:  # pandas' LaTeX writer needs jinja2
            return paths
        paths.append(out_dir / f"{name}.tex")
        paths[-1].write_text(tex)
    return paths
