"""Training: configs, precision, optimizer, LR schedule, the loop, and the Ray Train driver.

`raygrow.train(config, schedule=None, ...)` is `raygrow.train.loop.train`: one run to its token
budget in this process (the module is callable; see raygrow/_api.py).
"""

from raygrow._api import make_callable

make_callable(__name__, "raygrow.train.loop:train")
