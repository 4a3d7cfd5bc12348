import pytest
from pydantic import ValidationError

from worker.cli import main
from worker.config import Settings, load_settings
from worker.errors import ConfigError
from worker.settings_doc import settings_table


def test_environment_with_nested_delimiter(monkeypatch):
    monkeypatch.setenv("EMBED_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("EMBED_BATCH__MAX_TOKENS", "4096")
    monkeypatch.setenv("EMBED_MODEL__DEVICE", "cuda:1")
    s = load_settings()
    assert s.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert s.batch.max_tokens == 4096
    assert s.model.device == "cuda:1"
    assert s.batch.max_size == 256  # untouched defaults stay


def test_settings_are_frozen():
    s = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        s.batch.max_size = 3


def test_redis_url_is_secret_and_switches_dedup(monkeypatch):
    monkeypatch.setenv("EMBED_REDIS__URL", "redis://:hunter2@localhost:6379/0")
    s = load_settings()
    assert s.redis.enabled
    assert "hunter2" not in repr(s) and "hunter2" not in s.model_dump_json()
    monkeypatch.setenv("EMBED_REDIS__DEDUP", "false")
    assert not load_settings().redis.enabled


@pytest.mark.parametrize(
    "env, value, needle",
    [
        ("EMBED_BATCH__MAX_TOKENS", "0", "EMBED_BATCH__MAX_TOKENS"),
        ("EMBED_BATCH__MAX_SIZE", "many", "EMBED_BATCH__MAX_SIZE"),
        ("EMBED_MODEL__DTYPE", "int4", "EMBED_MODEL__DTYPE"),
        ("EMBED_MODEL__DEVICE", "gpu", "EMBED_MODEL__DEVICE"),
        ("EMBED_KAFKA__OUTPUT_TOPIC", "documents", "EMBED_KAFKA__OUTPUT_TOPIC"),
        ("EMBED_KAFKA__SECURITY_PROTOCOL", "SASL_SSL", "EMBED_KAFKA__SASL_MECHANISM"),
        ("EMBED_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512", "EMBED_KAFKA__SASL_USERNAME"),
        ("EMBED_KAFKA__ASSIGNMENT_STRATEGY", "sticky-ish", "EMBED_KAFKA__ASSIGNMENT_STRATEGY"),
        ("EMBED_KAFKA__GROUP_INSTANCE_ID", "pod 0/with spaces", "EMBED_KAFKA__GROUP_INSTANCE_ID"),
        ("EMBED_REDIS__ON_ERROR", "ignore", "EMBED_REDIS__ON_ERROR"),
    ],
)
def test_bad_settings_fail_with_one_line_naming_the_setting(monkeypatch, env, value, needle):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_cli_flags_override_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("EMBED_BATCH__MAX_SIZE", "0")
    # the bad environment value is reported through the CLI as exit code 2 and one line
    assert main(["run", "--exit-when-idle", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("embed-worker: invalid setting EMBED_BATCH__MAX_SIZE") and "\n" not in err


def test_every_setting_is_in_the_generated_table():
    table = settings_table()
    for section, model in Settings.model_fields.items():
        sub = getattr(model.annotation, "model_fields", {})
        for name in sub:
            assert f"`EMBED_{section.upper()}__{name.upper()}`" in table


def test_the_readme_holds_the_current_settings_table():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert settings_table() in readme, (
        "docs/configuration.md is stale: paste the output of `embed-worker config --markdown`"
    )


def test_secrets_never_appear_in_settings_dumps_or_error_lines(monkeypatch):
    secrets = {
        "EMBED_KAFKA__SASL_PASSWORD": "kafka-s3cret",
        "EMBED_KAFKA__SSL_PASSWORD": "key-s3cret",
        "EMBED_REDIS__PASSWORD": "redis-s3cret",
        "EMBED_REDIS__URL": "rediss://u:url-s3cret@r:6380/0",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("EMBED_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("EMBED_KAFKA__SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("EMBED_KAFKA__SASL_USERNAME", "svc")
    s = load_settings()
    shown = repr(s) + s.model_dump_json() + str(s.model_dump())
    assert not any(v in shown for v in secrets.values())
    monkeypatch.setenv(
        "EMBED_KAFKA__SASL_PASSWORD", ""
    )  # still a valid (empty) secret, so break another setting
    monkeypatch.setenv("EMBED_BATCH__MAX_SIZE", "-1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert not any(v in str(info.value) for v in secrets.values())


def test_kafka_security_settings_reach_the_client_options(monkeypatch):
    from worker.transport.kafka_python import client_options

    monkeypatch.setenv("EMBED_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("EMBED_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("EMBED_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("EMBED_KAFKA__SASL_PASSWORD", "pw")
    monkeypatch.setenv("EMBED_KAFKA__SSL_CAFILE", "/etc/ca.pem")
    monkeypatch.setenv("EMBED_KAFKA__SSL_CERTFILE", "/etc/client.pem")
    opts = client_options(load_settings().kafka)
    assert opts["security_protocol"] == "SASL_SSL" and opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (opts["sasl_plain_username"], opts["sasl_plain_password"]) == ("svc", "pw")
    assert (opts["ssl_cafile"], opts["ssl_certfile"]) == (
        "/etc/ca.pem",
        "/etc/client.pem",
    ) and "ssl_keyfile" not in opts


def test_the_retired_lookahead_setting_is_still_accepted(monkeypatch):
    # EMBED_BATCH__LOOKAHEAD no longer means anything (batches are chosen from everything waiting);
    # a deployment that still sets it must start, not fail on an unknown setting
    monkeypatch.setenv("EMBED_BATCH__LOOKAHEAD", "4")
    assert load_settings().batch.lookahead == 4


def test_a_postgres_sink_without_its_url_fails_at_start_up_naming_it(monkeypatch):
    monkeypatch.setenv("EMBED_SINK__STORE", "postgres")
    with pytest.raises(ConfigError, match="EMBED_SINK__POSTGRES_URL is required"):
        load_settings()
    monkeypatch.setenv("EMBED_SINK__POSTGRES_URL", "postgresql://embed:s3cret@db:5432/app")
    assert load_settings().sink.store == "postgres"
