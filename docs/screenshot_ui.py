"""Screenshot of the MLflow UI for a growth-schedule search -> docs/mlflow_ui.png.

    python docs/screenshot_ui.py [--store DIR] [--out docs/mlflow_ui.png] [--port P]

Without --store it logs a small *synthetic* search (tests/fixtures/synthetic.py: a parent run,
annealed scratch arms at three budgets, the small model alone, and grown schedules at three
timings x two operators x two seeds, one stopped by ASHA) into a fresh SQLite store through
`SearchTracker`, exactly as the search's callback would. Point --store at a real search's output
folder (the one holding mlflow.db) to capture that instead.

It then starts `mlflow ui --backend-store-uri sqlite:////.../mlflow.db --host 127.0.0.1 --port P`,
waits for /health, captures the experiment page with headless Chromium (Debian package
`chromium`), and stops the server and the browser by their process group ids. Takes about a
minute (more on a busy machine).

Chromium is driven over the DevTools protocol (aiohttp's websocket client, installed with
ray[default]) rather than with `--screenshot` alone, because MLflow 3.17 keeps the page layout in
the browser's localStorage: the script closes the "MLflow Assistant" side panel, expands the
parent run and picks the columns that compare schedules (val_loss, flops, speedup_vs_scratch,
operator, factor, timing, arm, status) before capturing. Without aiohttp it falls back to the
plain `--screenshot` flag (default layout). Writes `mlflow_ui.png` (runs table) and
`mlflow_ui_charts.png` (val_loss vs step = tokens).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

# the synthetic search and the `mlflow ui` runner are test fixtures, not part of raygrow
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures.mlflow_server import local_server, stop_group  # noqa: E402
from fixtures.synthetic import Plan, log_search  # noqa: E402

from raygrow.model import ModelConfig  # noqa: E402
from raygrow.tracking import SearchTracker, default_tracking_uri  # noqa: E402

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1600,1000",
]


def synthetic_store(folder: Path) -> tuple[str, str]:
    uri = default_tracking_uri(folder)
    experiment = "depth-gstack-4x64"
    tracker = SearchTracker(uri, experiment)
    plan = Plan(ModelConfig(n_layers=4, d_model=64, n_heads=2), 2_000_000, d_star_frac=0.15)
    log_search(
        tracker, plan, seeds=(0, 1), timings=(0.05, 0.15, 0.4), operators=("stack", "stack_zero"),
        n_evals=10, stopped=1,
    )  # fmt: skip
    runs = tracker.client.search_runs(
        [tracker.experiment_id],
        "tags.`raygrow.role` = 'trial'",
        order_by=["metrics.val_loss ASC"],
    )
    table = [
        {
            "rank": i + 1,
            "trial": r.data.tags["raygrow.trial_id"],
            "arm": r.data.tags["raygrow.arm"],
            "val_loss": r.data.metrics.get("val_loss"),
            "flops": r.data.metrics.get("flops"),
            "status": r.data.tags["raygrow.status"],
        }
        for i, r in enumerate(runs)
    ]
    tracker.finish_search(table, {"best_trial": table[0]["trial"], "n_trials": len(table)})
    return uri, experiment


def experiment_id(url: str, name: str | None) -> str:
    if name:
        q = urllib.parse.urlencode({"experiment_name": name})
        with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/get-by-name?{q}") as r:
            return json.loads(r.read())["experiment"]["experiment_id"]
    body = json.dumps({"max_results": 50}).encode()
    req = urllib.request.Request(
        f"{url}/api/2.0/mlflow/experiments/search",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        exps = [e for e in json.loads(r.read())["experiments"] if e["name"] != "Default"]
    return exps[0]["experiment_id"]


COLUMNS = [
    "metrics.`val_loss`",
    "metrics.`flops`",
    "metrics.`speedup_vs_scratch`",
    "params.`operator`",
    "params.`factor`",
    "params.`grow_at_frac`",
    "params.`seed`",
    "tags.`raygrow.arm`",
    "tags.`raygrow.status`",
]


def _browser(profile: str, *extra: str) -> subprocess.Popen:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium not found: apt-get install -y chromium")
    cmd = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra]
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        stop_group(proc)  # SIGTERM/SIGKILL by process group id


def screenshot_plain(page: str, out: Path, budget_ms: int = 25_000) -> None:
    """Default layout only: `chromium --headless --screenshot`."""
    with tempfile.TemporaryDirectory(prefix="raygrow-chromium-") as profile:
        proc = _browser(
            profile, f"--virtual-time-budget={budget_ms}", f"--screenshot={out.resolve()}", page
        )
        try:
            proc.wait(timeout=240)
        finally:
            _stop(proc)


async def _cdp_capture(url: str, exp_id: str, parent: str, shots: dict[str, Path]) -> None:
    import aiohttp

    with tempfile.TemporaryDirectory(prefix="raygrow-chromium-") as profile:
        proc = _browser(profile, "--remote-debugging-port=0", "about:blank")
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            for _ in range(1200):
                if port_file.is_file() and port_file.read_text().strip():
                    break
                await asyncio.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/json") as resp:
                    target = next(t for t in await resp.json() if t["type"] == "page")
                async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    ids = iter(range(1, 10**6))

                    async def call(method: str, **params):
                        mid = next(ids)
                        await ws.send_json({"id": mid, "method": method, "params": params})
                        while True:
                            msg = await ws.receive_json()
                            if msg.get("id") == mid:
                                if "error" in msg:
                                    raise RuntimeError(f"{method}: {msg['error']}")
                                return msg.get("result", {})

                    async def js(expr: str):
                        res = await call("Runtime.evaluate", expression=expr, returnByValue=True)
                        return res.get("result", {}).get("value")

                    await call(
                        "Emulation.setDeviceMetricsOverride",
                        width=1600, height=1000, deviceScaleFactor=1, mobile=False,
                    )  # fmt: skip
                    base = f"{url}/#/experiments/{exp_id}/runs"
                    await call("Page.navigate", url=base)
                    key = f'MLflowLocalStorage-1.1-ExperimentPage-["{exp_id}"]-ReactComponentState'
                    for _ in range(120):  # the app writes its state once it has loaded
                        if await js(f"localStorage.getItem({json.dumps(key)}) !== null"):
                            break
                        await asyncio.sleep(1)
                    state = json.loads(await js(f"localStorage.getItem({json.dumps(key)})"))
                    state.update(
                        selectedColumns=COLUMNS,
                        runsExpanded={parent: True},
                        orderByKey="attributes.start_time",
                        orderByAsc=False,
                        runsHiddenMode="SHOW_ALL",
                        hideEmptyCharts=True,
                    )
                    # write the layout from a page of the same origin that does not run the app
                    # (the app saves its own state when it unloads, over ours)
                    await call("Page.navigate", url=f"{url}/health")
                    await asyncio.sleep(2)
                    settings = {
                        key: json.dumps(state),
                        f"MLflowLocalStorage-1.1-ExperimentView-{exp_id}-expandRows": "true",
                        "mlflow.assistant.panelOpen_v1": "false",
                        "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
                    }
                    for k, v in settings.items():
                        await js(f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)})")
                    for mode, out in shots.items():
                        page = base + ("?compareRunsMode=CHART" if mode == "charts" else "")
                        await call("Page.navigate", url=f"{url}/health")
                        await asyncio.sleep(1)
                        await call("Page.navigate", url=page)
                        marker = "val_loss" if mode == "charts" else "scratch-"
                        for _ in range(120):  # wait for the run rows (or charts) to render
                            await asyncio.sleep(1)
                            if await js(f"document.body.innerText.includes('{marker}')"):
                                break
                        if mode == "charts":  # keep the loss charts (x = step = tokens)
                            await js(
                                "(() => {const el = document.querySelector("
                                "'input[placeholder=\"Search metric charts\"]');"
                                "if (!el) return 0;"
                                "Object.getOwnPropertyDescriptor(HTMLInputElement.prototype,"
                                " 'value').set.call(el, 'loss');"
                                "el.dispatchEvent(new Event('input', {bubbles: true}));"
                                "return 1})()"
                            )
                        await asyncio.sleep(8)  # let charts and column widths settle
                        shot = await call("Page.captureScreenshot", format="png")
                        out.write_bytes(base64.b64decode(shot["data"]))
        finally:
            _stop(proc)


def parent_run(url: str, exp_id: str) -> str:
    body = json.dumps(
        {"experiment_ids": [exp_id], "filter": "tags.`raygrow.role` = 'search'"}
    ).encode()
    req = urllib.request.Request(
        f"{url}/api/2.0/mlflow/runs/search",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        runs = json.loads(r.read()).get("runs", [])
    return runs[0]["info"]["run_id"] if runs else ""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--store", help="folder with a search's mlflow.db (default: synthetic search)")
    p.add_argument("--experiment", help="experiment to show (default: the first one)")
    p.add_argument("--out", default=str(Path(__file__).with_name("mlflow_ui.png")))
    p.add_argument("--port", type=int, default=None)
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="raygrow-ui-") as tmp:
        if args.store:
            uri, experiment = default_tracking_uri(args.store), args.experiment
        else:
            uri, experiment = synthetic_store(Path(tmp))
        log = Path(tmp) / "mlflow_ui.log"
        out = Path(args.out)
        shots = {"table": out, "charts": out.with_name(out.stem + "_charts.png")}
        with local_server(uri, port=args.port, command="ui", log_file=log) as url:
            exp_id = experiment_id(url, experiment)
            try:
                import aiohttp  # noqa: F401
            except ImportError:
                screenshot_plain(f"{url}/#/experiments/{exp_id}/runs", out)
                shots = {"table": out}
            else:
                asyncio.run(_cdp_capture(url, exp_id, parent_run(url, exp_id), shots))
        for path in shots.values():
            if not path.is_file() or path.stat().st_size < 10_000:
                print(f"screenshot failed; server log: {log.read_text()[-2000:]}", file=sys.stderr)
                return 1
            print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
