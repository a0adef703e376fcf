"""Analysis of growth-schedule searches logged by `raygrow.tracking` (reads MLflow, never Ray).

    collect.py   MLflow runs -> pyarrow tables (one row per trial; curves as list columns and as a
                 long table)
    speedups.py  speedup at matched loss vs the search's annealed scratch arms; validity check
    fit.py       optimal growth timing per (N, C) group and the power-law guideline with
                 bootstrap intervals; G_stack's formula for comparison
    tables.py    CSV / Parquet / Markdown / LaTeX writers
    plots.py     loss vs FLOPs, speedup heatmap, timing guideline (matplotlib Agg)
    report.py    `fit_guidelines`: everything above, behind `python -m raygrow.guidelines`

Submodules are imported on use; importing this package is cheap.
"""
