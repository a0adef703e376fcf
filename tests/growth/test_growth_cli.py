"""`python -m raygrow.growth list | check` through a real subprocess: output and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from raygrow.growth import OPERATORS
from raygrow.growth.__main__ import main
from raygrow.growth.check import fresh_state, toy_batch_fn, toy_config, train_briefly


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "raygrow.growth", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def in_process(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_shows_every_operator(capsys) -> None:
    out = cli("list")
    assert out.returncode == 0, out.stderr
    for name in OPERATORS:
        assert f"\n{name} " in "\n" + out.stdout
    assert "FP: yes" in out.stdout and "params:" in out.stdout
    code, stdout, _ = in_process(capsys, "list", "--json")
    rows = json.loads(stdout)
    assert code == 0 and [r["name"] for r in rows] == list(OPERATORS)
    assert rows[0]["params"]["layer_map"]["default"] == "stack"


def test_check_fresh_model_text_and_json(capsys) -> None:
    out = cli("check", "--op", "stack", "--train-steps", "5", "--param", "layer_map=[0,1,1,0]")
    assert out.returncode == 0, out.stderr
    assert "2x64" in out.stdout and "4x64" in out.stdout
    assert "keys match new FQNs: yes, shapes match: yes" in out.stdout
    assert "FP claimed: no" in out.stdout and "max |dlogit|" in out.stdout
    code, stdout, stderr = in_process(
        capsys,
        "check",
        "--op",
        "hypercloning",
        "--param",
        "d_model=128",
        "--kv-heads",
        "1",
        "--tied",
        "--opt-policy",
        "scale",
        "--json",
        "--train-steps",
        "5",
    )
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["fp_claimed"] and abs(report["loss_after"] - report["loss_before"]) < 1e-5
    assert report["optim"]["keys_match"] and report["config_after"]["d_model"] == 128


@pytest.mark.parametrize(
    "args,match",
    [
        (["--op", "nope"], "unknown growth operator 'nope'"),
        (["--op", "stack", "--param", "factor=1"], "factor=1"),
        (["--op", "stack", "--param", "factor"], "key=value"),
        (["--op", "zero_width", "--param", "d_model=80"], "head_dim"),
        (["--op", "stack", "--checkpoint", "/nonexistent/ckpt.pt"], "does not exist"),
    ],
)
def test_check_bad_input_exits_2_with_one_line(args: list[str], match: str, capsys) -> None:
    code, _, stderr = in_process(capsys, "check", *args)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raygrow.growth: error:")
    assert match in lines[0]


def test_bad_operator_exits_2_in_a_subprocess() -> None:
    out = cli("check", "--op", "nope")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().count("\n") == 0 and "unknown growth operator" in out.stderr


def test_check_checkpoint(tmp_path, capsys) -> None:
    from raygrow.train.state import TrainState, save_checkpoint

    state, _ = train_briefly(fresh_state(toy_config("2x64")), toy_batch_fn(64), 3)
    path = save_checkpoint(
        TrainState(
            model_config=state.config,
            model_state=state.params,
            optim_state=state.optim,
            step=state.step,
        ),
        tmp_path / "ckpt.pt",
    )
    code, stdout, stderr = in_process(
        capsys, "check", "--op", "zero", "--checkpoint", str(path), "--json"
    )
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["step"] == 3 and report["optim"]["steps"] == [0, 3]
    assert report["loss_after"] == pytest.approx(report["loss_before"], abs=1e-6)
