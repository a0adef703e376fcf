"""Offline checks of the cluster-launcher configs: cluster.yaml (AWS), cluster.local.yaml (on-prem).

Each file goes through the two steps `ray up` starts with: `prepare_config` (merge the provider's
defaults.yaml, expand the local provider's machine list) and `validate_config` (Ray's own JSON
schema, ray/autoscaler/ray-schema.json). Both are private Ray APIs, valid for the pinned Ray
version. No test here touches the network: sockets and boto3 are blocked while they run.
"""

from __future__ import annotations

import copy
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"aws": ROOT / "cluster.yaml", "local": ROOT / "cluster.local.yaml"}
COMMAND_KEYS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)

# Credentials that must never be committed: AWS access key ids, secret keys, private keys,
# inline Ray tokens, passwords.
SECRET_PATTERNS = [
    re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b"),
    re.compile(r"aws_secret_access_key|aws_session_token|AWS_SECRET_ACCESS_KEY", re.IGNORECASE),
    re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"RAY_AUTH_TOKEN\s*="),
    re.compile(r"password\s*[:=]", re.IGNORECASE),
]


@pytest.fixture
def offline(monkeypatch):
    """Any DNS lookup, connection or boto3 import during the test fails loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    # None in sys.modules makes `import boto3` raise ImportError.
    monkeypatch.setitem(sys.modules, "boto3", None)
    monkeypatch.setitem(sys.modules, "botocore", None)


def load(kind: str) -> dict:
    return yaml.safe_load(CONFIGS[kind].read_text())


def check(config: dict) -> dict:
    """What `ray up` does first: fill in defaults, then schema-validate; returns the result."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_config_passes_rays_schema_offline(kind, offline):
    prepared = check(load(kind))
    assert prepared["head_node_type"] in prepared["available_node_types"]
    # prepare_config filled the provider's defaults without contacting anything
    assert "cluster_synced_files" in prepared
    assert (
        prepared["head_setup_commands"][: len(prepared["setup_commands"])]
        == (prepared["setup_commands"])
    )


def test_aws_node_types(offline):
    config = load("aws")
    prepared = check(config)
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    workers = {name: t for name, t in types.items() if name != prepared["head_node_type"]}
    assert len(workers) == 1, "one GPU worker type"
    (worker,) = workers.values()
    # trial drivers are pinned to the head by a custom resource that only the head offers
    assert head["resources"].get("train_driver", 0) >= 1
    assert "train_driver" not in worker["resources"]
    assert head["max_workers"] == 0
    assert 0 <= worker["min_workers"] <= worker["max_workers"] <= config["max_workers"]
    # the head is never preemptible; the GPU workers may be
    assert "InstanceMarketOptions" not in head["node_config"]
    # workers write checkpoints to S3 themselves, and the launcher gives a profile to the head only
    assert "IamInstanceProfile" in worker["node_config"]
    # resources were not autodetected from the instance type (that needs AWS, at `ray up`)
    assert "CPU" not in worker["resources"]


def test_local_head_offers_train_driver(offline):
    prepared = check(load("local"))
    node_type = prepared["available_node_types"]["local.cluster.node"]
    assert node_type["min_workers"] == node_type["max_workers"] == 2
    start = " ".join(prepared["head_start_ray_commands"])
    resources = re.search(r"--resources='([^']*)'", start)
    assert resources and '"train_driver"' in resources.group(1)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_commands_are_valid_shell_and_bind_no_wildcard(kind):
    config = load(kind)
    for key in COMMAND_KEYS:
        for command in config.get(key, []):
            assert isinstance(command, str), f"{key}: {command!r} parsed as YAML, not a string"
            result = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
            assert result.returncode == 0, f"{key}: {command!r}: {result.stderr}"
    start = " ".join(config["head_start_ray_commands"])
    assert "0.0.0.0" not in start, "dashboard and MLflow bind loopback/private addresses only"
    assert "RAY_AUTH_MODE=token" in start
    assert "RAY_AUTH_MODE=token" in " ".join(config["worker_start_ray_commands"])
    mlflow = next(c for c in config["head_start_ray_commands"] if "mlflow server" in c)
    assert "sqlite:///$HOME/" in mlflow, "absolute SQLite URI (4 slashes once $HOME expands)"
    assert "--artifacts-destination" in mlflow
    # the synced working tree is what gets installed
    assert config["file_mounts"]["~/raygrow"] == "."
    assert any("-e ~/raygrow" in c for c in config["setup_commands"])


def test_pinned_ray_matches_the_validator():
    """The schema used above is the installed Ray's; the clusters install the pinned one."""
    import ray

    pyproject = (ROOT / "pyproject.toml").read_text()
    pinned = re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', pyproject)
    assert pinned and pinned.group(1) == ray.__version__


@pytest.mark.parametrize(
    ("kind", "breakage"),
    [
        ("aws", lambda c: c.update(max_workers="four")),
        ("aws", lambda c: c["available_node_types"]["gpu_worker"].update(max_workers="4")),
        ("aws", lambda c: c.update(max_worker=4)),  # misspelt key
        # an unquoted `--resources='{...}'` list item is a YAML mapping, not a command
        ("aws", lambda c: c.update(head_start_ray_commands=[{"ray start --resources": "{}"}])),
        ("local", lambda c: c["provider"].update(worker_ips="10.0.0.11")),
    ],
    ids=["max_workers-str", "node-max_workers-str", "typo-key", "command-mapping", "ips-str"],
)
def test_broken_copy_is_rejected(kind, breakage, offline):
    config = load(kind)
    breakage(config)
    with pytest.raises(jsonschema.ValidationError):
        check(config)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_missing_provider_is_rejected(kind, offline):
    prepared = check(load(kind))
    del prepared["provider"]
    with pytest.raises(jsonschema.ValidationError, match="'provider' is a required property"):
        validate_config(prepared)
    raw = load(kind)
    del raw["provider"]
    with pytest.raises((KeyError, jsonschema.ValidationError)):
        check(raw)


def find_secrets(text: str) -> list[str]:
    return [m.group(0) for p in SECRET_PATTERNS for m in p.finditer(text)]


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_no_secrets(kind):
    assert find_secrets(CONFIGS[kind].read_text()) == []


def test_secret_scan_catches_planted_keys():
    planted = [
        "aws_access_key_id: AKIAIOSFODNN7EXAMPLE",
        "key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "  - export RAY_AUTH_TOKEN=abc123",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
    ]
    for line in planted:
        assert find_secrets(line), line


def keys_without_comment(text: str, max_column: int) -> list[str]:
    """Mapping keys (at most `max_column` deep) with no comment line right above them."""
    lines = text.splitlines()
    missing = []
    tokens = list(yaml.scan(text))
    for key, scalar in zip(tokens, tokens[1:], strict=False):
        if not isinstance(key, yaml.KeyToken) or not isinstance(scalar, yaml.ScalarToken):
            continue
        line, column = scalar.start_mark.line, scalar.start_mark.column
        if column > max_column or lines[line].lstrip().startswith("-"):
            continue  # deeper keys, and keys inside list items (e.g. BlockDeviceMappings)
        above = next((s.strip() for s in reversed(lines[:line]) if s.strip()), "")
        if not above.startswith("#"):
            missing.append(f"line {line + 1}: {scalar.value}")
    return missing


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_every_top_level_key_has_a_comment_above(kind):
    assert keys_without_comment(CONFIGS[kind].read_text(), max_column=0) == []


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_user_editable_keys_are_commented(kind):
    # provider/auth/file_mounts entries, node types, their fields, and the EC2 launch parameters
    assert keys_without_comment(CONFIGS[kind].read_text(), max_column=6) == []


def test_comment_check_flags_an_uncommented_key():
    text = "# name\ncluster_name: x\nmax_workers: 2\nprovider:\n  # t\n  type: aws\n  region: r\n"
    assert keys_without_comment(text, 0) == ["line 3: max_workers", "line 4: provider"]
    assert keys_without_comment(text, 2)[-1] == "line 7: region"


def test_setup_installs_python_311_and_a_cuda_torch():
    for kind in CONFIGS:
        setup = " ".join(load(kind)["setup_commands"])
        assert "--python 3.11" in setup
        assert "torch.version.cuda" in setup  # fails setup if a CPU-only torch got installed
        for command in load(kind)["setup_commands"]:
            shlex.split(command)  # balanced quotes
