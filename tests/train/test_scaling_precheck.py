"""The scaling pre-check on autoscaling clusters (issue 16, part 4).

`check_cluster_fit` is a pure function over the autoscaler's node types (as
`autoscaler_view()` reads them from Ray), the cluster's current resources and the request:
it accepts what fits now, accepts with one "waiting for nodes" line what fits once the
autoscaler has started nodes, and rejects with one line what no node type can ever hold.
Without an autoscaler it is today's rule (current resources only). The Ray tests read the
cluster config through Ray's own API on a real local instance: none there, then one that
this test writes where an autoscaler reports it.
"""

from __future__ import annotations

import pytest

from raygrow.errors import ConfigError
from raygrow.train.driver import check_cluster_fit

GPU_WORKER = {"CPU": 1.0, "GPU": 1.0}
CPU_WORKER = {"CPU": 1.0}
HEAD_NOW = {"CPU": 4.0, "train_driver": 16.0, "memory": 8e9}


def view(*types: tuple[str, dict[str, float], int], max_resources=None) -> dict:
    return {
        "node_types": [{"name": n, "resources": r, "max_workers": m} for n, r, m in types],
        "max_resources": max_resources or {},
    }


HEAD = ("head", {"CPU": 4.0, "train_driver": 16.0}, 0)
GPU_NODES = view(HEAD, ("gpu_worker", {"CPU": 8.0, "GPU": 1.0, "memory": 6e10}, 4))


def one_line_error(*args) -> str:
    with pytest.raises(ConfigError) as err:
        check_cluster_fit(*args)
    text = str(err.value)
    assert "\n" not in text
    return text


def test_fits_now_needs_no_autoscaler() -> None:
    now = HEAD_NOW | {"CPU": 20.0, "GPU": 2.0}
    assert check_cluster_fit(2, GPU_WORKER, now, GPU_NODES) is None
    assert check_cluster_fit(2, GPU_WORKER, now, None) is None
    assert check_cluster_fit(4, CPU_WORKER, HEAD_NOW, None) is None


def test_fits_after_scaling_up_is_accepted_with_one_line() -> None:
    # the GPU nodes are not up yet (min_workers 0): today this was rejected
    line = check_cluster_fit(4, GPU_WORKER, HEAD_NOW, GPU_NODES)
    assert line and "\n" not in line
    assert "'gpu_worker'" in line and "waiting for nodes to scale up" in line
    # two GPUs already up, two more to come
    assert check_cluster_fit(4, GPU_WORKER, HEAD_NOW | {"CPU": 20.0, "GPU": 2.0}, GPU_NODES)
    # several workers per node: 2 nodes x 4 GPUs hold 8
    big = view(HEAD, ("p4", {"CPU": 32.0, "GPU": 4.0}, 2))
    assert check_cluster_fit(8, GPU_WORKER, HEAD_NOW, big)
    # CPU-only workers on CPU worker nodes; max_workers -1 = unbounded
    cpu_nodes = view(HEAD, ("cpu_worker", {"CPU": 16.0}, -1))
    assert check_cluster_fit(100, CPU_WORKER, HEAD_NOW, cpu_nodes)


def test_never_fits_is_rejected_naming_the_largest_node_type() -> None:
    # more workers than max_workers x GPUs per node
    text = one_line_error(5, GPU_WORKER, HEAD_NOW, GPU_NODES)
    assert "never fit" in text and "at most 4" in text and "'gpu_worker'" in text
    assert "--workers 4 or fewer" in text and "max_workers" in text
    # no node type has a GPU at all
    text = one_line_error(1, GPU_WORKER, HEAD_NOW, view(HEAD, ("cpu", {"CPU": 16.0}, 4)))
    assert "no node type" in text and "'cpu'" in text and "drop --use-gpu" in text
    # one worker is larger than any node (CPUs per worker above every node type's CPUs)
    text = one_line_error(1, {"CPU": 16.0, "GPU": 1.0}, HEAD_NOW, GPU_NODES)
    assert "'gpu_worker'" in text and "at most 8 CPUs per worker" in text
    # the largest of several GPU types is named
    two = view(HEAD, ("g1", {"CPU": 4.0, "GPU": 1.0}, 2), ("g8", {"CPU": 8.0, "GPU": 8.0}, 1))
    text = one_line_error(1, {"CPU": 12.0, "GPU": 1.0}, HEAD_NOW, two)
    assert "largest: 'g8'" in text
    # a node type with max_workers 0 can never be launched (the head's own type)
    text = one_line_error(1, GPU_WORKER, HEAD_NOW, view(HEAD, ("gpu", GPU_WORKER, 0)))
    assert "no node type" in text
    # the cluster-wide max_resources cap wins over the node types
    capped = view(HEAD, ("gpu_worker", {"CPU": 8.0, "GPU": 1.0}, 4), max_resources={"GPU": 2})
    assert "--workers 2 or fewer" in one_line_error(3, GPU_WORKER, HEAD_NOW, capped)
    assert check_cluster_fit(2, GPU_WORKER, HEAD_NOW, capped)


def test_without_an_autoscaler_current_resources_decide() -> None:
    text = one_line_error(2, GPU_WORKER, HEAD_NOW, None)
    assert "needs 2 GPUs but the Ray cluster has 0" in text and "drop --use-gpu" in text
    text = one_line_error(8, CPU_WORKER, HEAD_NOW, None)
    assert "--workers 4 or fewer" in text
    # an autoscaler view without node types is no autoscaler
    assert "drop --use-gpu" in one_line_error(2, GPU_WORKER, HEAD_NOW, view())


def test_search_driver_resource_may_come_from_a_launchable_node_type(tmp_path) -> None:
    from raygrow.model import ModelConfig
    from raygrow.search.config import SMOKE_TRAIN, SearchConfig
    from raygrow.search.tuner import DRIVER_RESOURCE, trial_resources

    cfg = SearchConfig(
        target=ModelConfig.from_shape("4x64"),
        tokens=96 * 8 * 64,
        train=SMOKE_TRAIN.replace(threads=1),
        out=str(tmp_path),
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        small=ModelConfig.from_shape("2x64"),
        workers=2,
    )
    drivers = view(("drivers", {"CPU": 4.0, DRIVER_RESOURCE: 16.0}, 1))
    assert trial_resources(cfg, {"CPU": 2.0}, drivers) == {DRIVER_RESOURCE: 1}
    with pytest.raises(ConfigError, match="no 'train_driver' resource"):
        trial_resources(cfg, {"CPU": 2.0}, GPU_NODES | {"node_types": GPU_NODES["node_types"][1:]})
    with pytest.raises(ConfigError, match="no 'train_driver' resource"):
        trial_resources(cfg, {"CPU": 2.0}, None)


def cluster_config_proto():
    from ray.core.generated import autoscaler_pb2

    config = autoscaler_pb2.ClusterConfig()
    head = config.node_group_configs.add(name="head", max_count=1)
    head.resources.update({"CPU": 2, "train_driver": 16})  # uint64 in the proto
    gpu = config.node_group_configs.add(name="gpu_worker", min_count=0, max_count=4)
    gpu.resources.update({"CPU": 8, "GPU": 1})
    return config


@pytest.mark.ray
def test_real_ray_api_reads_the_autoscaler_cluster_config(ray_cluster, capsys) -> None:
    """On a local instance Ray reports no cluster config: today's rule. With the config an
    autoscaler reports (written here to the same GCS key, removed after), the same Ray API
    returns its node types and `validate_scaling` waits for GPU nodes instead of failing."""
    import ray
    from ray._private.state import state
    from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_put

    from raygrow.train.config import TrainConfig
    from raygrow.train.driver import autoscaler_view, validate_scaling

    assert autoscaler_view() is None
    config = TrainConfig(batch_size=8)
    with pytest.raises(ConfigError, match="drop --use-gpu"):
        validate_scaling(config, num_workers=2, use_gpu=True, cpus_per_worker=1)

    namespace = ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE
    key = ray._raylet.GCS_AUTOSCALER_CLUSTER_CONFIG_KEY
    _internal_kv_put(key, cluster_config_proto().SerializeToString(), namespace=namespace)
    try:
        got = autoscaler_view()
        assert got is not None
        assert {t["name"]: (t["resources"], t["max_workers"]) for t in got["node_types"]} == {
            "head": ({"CPU": 2.0, "train_driver": 16.0}, 1),
            "gpu_worker": ({"CPU": 8.0, "GPU": 1.0}, 4),
        }
        # Ray Train V2's own worker-group check sees the same maximum
        assert state.get_max_resources_from_cluster_config()["GPU"] == 4
        capsys.readouterr()
        resources = validate_scaling(config, num_workers=4, use_gpu=True, cpus_per_worker=1)
        assert resources == {"CPU": 1.0, "GPU": 1.0}
        err = capsys.readouterr().err.strip()
        assert err.startswith("raygrow: ") and "waiting for nodes to scale up" in err
        assert len(err.splitlines()) == 1
        with pytest.raises(ConfigError, match="--workers 4 or fewer"):
            validate_scaling(config, num_workers=8, use_gpu=True, cpus_per_worker=1)
    finally:
        _internal_kv_del(key, namespace=namespace)
    assert autoscaler_view() is None
