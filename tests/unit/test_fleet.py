"""The supervisor's policies: what each child is told, how the fleet exits, one summary for all."""

from worker.config import KafkaSettings, MetricsSettings, ModelSettings, Settings
from worker.fleet import child_overrides, exit_code, merge_summaries


def test_each_child_gets_its_port_client_id_and_share_of_the_cores():
    s = Settings(
        processes=4, metrics=MetricsSettings(port=9400), kafka=KafkaSettings(client_id="emb")
    )
    flags = child_overrides(s, 2, cores=16)
    pairs = dict(zip(flags[::2], flags[1::2]))
    assert pairs == {
        "--processes": "1",
        "--kafka.client-id": "emb-2",
        "--metrics.port": "9402",
        "--model.cpu-cores": "4",
    }


def test_explicit_threads_and_an_any_port_are_left_alone():
    s = Settings(processes=3, metrics=MetricsSettings(port=0), model=ModelSettings(torch_threads=2))
    pairs = dict(zip(*[iter(child_overrides(s, 1, cores=2))] * 2))
    assert "--metrics.port" not in pairs and "--model.torch-threads" not in pairs


def test_a_configured_core_count_is_shared_out_instead_of_the_machines():
    # in a container the machine's count is the node's, not the CPU limit
    s = Settings(processes=2, model=ModelSettings(cpu_cores=6))
    pairs = dict(zip(*[iter(child_overrides(s, 0, cores=64))] * 2))
    assert pairs["--model.cpu-cores"] == "3"


def test_each_child_gets_its_own_static_group_instance_id():
    # one id shared by the children would fence all but one of them out of the group
    s = Settings(processes=2, kafka=KafkaSettings(group_instance_id="embed-worker-7c9f-x2"))
    ids = [
        dict(zip(*[iter(child_overrides(s, i, cores=2))] * 2))["--kafka.group-instance-id"]
        for i in range(2)
    ]
    assert ids == ["embed-worker-7c9f-x2-0", "embed-worker-7c9f-x2-1"]
    assert "--kafka.group-instance-id" not in child_overrides(Settings(processes=2), 0, cores=2)


def test_each_child_gets_its_own_transactional_id():
    # Kafka keeps one live producer per transactional id: a shared one fences every child but one
    s = Settings(processes=2, kafka=KafkaSettings(exactly_once=True, transactional_id="embed-tx"))
    ids = [
        dict(zip(*[iter(child_overrides(s, i, cores=2))] * 2))["--kafka.transactional-id"]
        for i in range(2)
    ]
    assert ids == ["embed-tx-0", "embed-tx-1"]
    assert "--kafka.transactional-id" not in child_overrides(Settings(processes=2), 0, cores=2)


def test_a_child_gets_at_least_one_core():
    pairs = dict(zip(*[iter(child_overrides(Settings(processes=4), 0, cores=2))] * 2))
    assert pairs["--model.cpu-cores"] == "1"


def test_the_fleet_exits_with_the_first_failure():
    assert exit_code([0, 0, 0]) == 0
    assert exit_code([0, 2, 1]) == 2
    assert exit_code([0, -9]) == 137  # killed by SIGKILL, as a shell reports it


def test_summaries_are_summed_over_one_window_and_kept():
    a = {
        "received": 10,
        "embedded": 8,
        "tokens": 90,
        "padded_tokens": 100,
        "first_message_at": 100.0,
        "last_output_at": 102.0,
        "encode_s": 3.9,
        "replicas": 2,
        "batch_p50_s": 0.1,
        "batch_p99_s": 0.3,
    }
    b = {
        "received": 5,
        "embedded": 5,
        "tokens": 40,
        "padded_tokens": 50,
        "first_message_at": 101.0,
        "last_output_at": 104.5,
        "encode_s": 6.8,
        "replicas": 2,
        "batch_p50_s": 0.2,
        "batch_p99_s": 0.5,
    }
    merged = merge_summaries([a, b])
    assert merged["received"] == 15 and merged["embedded"] == 13 and merged["tokens"] == 130
    assert merged["busy_s"] == 4.5 and merged["docs_per_s"] == round(13 / 4.5, 1)
    assert merged["padding_efficiency"] == round(130 / (100 + 50), 3)
    assert merged["batch_p99_s"] == 0.5
    # the model's time and its forward threads over the fleet: how busy it was (the benchmark's forward_busy)
    assert merged["encode_s"] == 10.7 and merged["replicas"] == 4
    assert merged["processes"] == [a, b]


def test_a_fleet_that_saw_nothing_reports_no_rate():
    merged = merge_summaries(
        [{"received": 0, "embedded": 0, "first_message_at": None, "last_output_at": None}]
    )
    assert merged["docs_per_s"] == 0.0 and merged["padding_efficiency"] is None
