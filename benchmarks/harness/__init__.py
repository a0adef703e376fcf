"""The benchmark scripts' shared harness (benchmarks/*.py import only from here and raygrow).

A script's own folder, benchmarks/, is on `sys.path` when it runs as
`python benchmarks/<script>.py` (from the repository root or from benchmarks/), so the scripts
import this package as `harness`; its modules import each other relatively.

- `common`: result folder (`--out`, results/ or results/quick/), the standard report header,
  report writing, matplotlib (Agg), mean ± std and median [min, max] formatting.
- `growth`: the growth benchmarks' protocol, arms as data, runs of raygrow's `Trainer` in a
  process pool with a per-run result cache, LR sweep, validity check, shared command line
  (growth_validity.py, growth_vs_scratch.py, incremental.py).
- `growth_report`: their analysis and report pieces: per-seed speedups at matched loss, the
  arm table, loss-vs-FLOPs curves, the validity verdict as report lines.
- `search`: `python -m raygrow.search` as a subprocess into an experiment folder and the
  folder read back (timing_factor.py, search_efficiency.py).
- `spaces`: tiny search spaces for their --quick modes, given to the search CLI as a file
  path (`benchmarks/harness/spaces.py:timing_factor_quick`).
- `bare_loop`: the bare torch training loop and raygrow's `Trainer.step_once`, timed
  (throughput.py, speed.py).
- `ray_run`: the 1-worker Ray Train throughput run and its config (overhead.py, speed.py).
- `speed_search`: speed.py's part b, the default search before (an old commit's git worktree)
  vs after (this tree): arms, runs, Tune's records, per-trial time split.
- `speed_search_report`: part b's report lines.
"""
