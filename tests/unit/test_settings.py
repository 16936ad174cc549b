"""Configuration: the destinations file, ${ENV} references, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.errors import ConfigError
from worker.platforms.kuper import KuperDestination
from worker.runtime.app import celery_config, served
from worker.settings import load, load_file, parse_destinations

KUPER = {"platform": "kuper", "base_url": "https://k.example", "username": "u", "password": "p"}


def test_a_table_becomes_a_typed_destination_with_defaults() -> None:
    dest = parse_destinations({"kuper-main": KUPER})["kuper-main"]
    assert isinstance(dest, KuperDestination)
    assert (dest.batch_size, dest.queue, dest.password.get_secret_value()) == (
        50,
        "deliver.kuper-main",
        "p",
    )


def test_env_references_are_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUPER_PW", "from-env")
    dest = parse_destinations({"k": {**KUPER, "password": "${KUPER_PW}"}})["k"]
    assert dest.password.get_secret_value() == "from-env"  # type: ignore[attr-defined]


def test_a_secret_whose_variable_is_unset_fails_only_when_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A producer reads the file without the secret; sending with it names the key."""
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    dest = parse_destinations({"k": {**KUPER, "password": "${NOPE_NOT_SET}"}})["k"]
    [problem] = dest.unset_secrets()
    assert str(problem) == (
        "destinations.k.password: names ${NOPE_NOT_SET}, which is not set in the environment"
    )
    with pytest.raises(ConfigError, match=r"destinations\.k\.password: names \$\{NOPE_NOT_SET\}"):
        dest.password.get_secret_value()  # type: ignore[attr-defined]
    assert "NOPE" in repr(dest) and "unset" not in str(dest.password)


def test_a_missing_variable_outside_a_secret_fails_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOPE_URL", raising=False)
    with pytest.raises(ConfigError, match=r"destinations\.k\.base_url: names \$\{NOPE_URL\}"):
        parse_destinations({"k": {**KUPER, "base_url": "${NOPE_URL}"}})


def test_a_set_secret_has_nothing_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUPER_PW", "from-env")
    assert (
        parse_destinations({"k": {**KUPER, "password": "${KUPER_PW}"}})["k"].unset_secrets() == []
    )


def test_a_named_config_file_that_is_missing_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEADRELAY_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError) as info:
        load()
    assert (
        str(info.value) == f"LEADRELAY_CONFIG: names {tmp_path / 'nope.toml'}, which does not exist"
    )
    monkeypatch.delenv("LEADRELAY_CONFIG")
    monkeypatch.chdir(tmp_path)
    assert load().destinations == {}  # the default file may be missing: no destinations yet


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("LEADRELAY_LOG_LEVEL", "verbose", "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("LEADRELAY_LOG_FORMAT", "jsno", "Input should be 'json' or 'text'"),
    ],
)
def test_log_settings_are_checked_at_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load(destinations={})
    assert str(info.value) == f"{variable}: {message}"


def test_a_log_level_is_read_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADRELAY_LOG_LEVEL", "warning")
    assert load(destinations={}).log_level == "WARNING"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"batch_size": 301}, "destinations.k.batch_size"),
        ({"rate": 0}, "destinations.k.rate"),
        ({"password": None}, "destinations.k.password"),
        ({"base_url": "ftp://x"}, "destinations.k.base_url"),
        ({"unknown": 1}, "destinations.k.unknown"),
        ({"platform": "nope"}, "destinations.k.platform"),
        ({"platform": None}, "destinations.k.platform"),
    ],
)
def test_a_wrong_setting_fails_naming_its_key(change: dict[str, object], key: str) -> None:
    table = {**KUPER, **change}
    table = {k: v for k, v in table.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        parse_destinations({"k": table})
    assert info.value.key == key


def test_the_file_is_read_and_unknown_top_level_keys_refused(tmp_path: Path) -> None:
    path = tmp_path / "leadrelay.toml"
    path.write_text(
        '[destinations.k]\nplatform = "kuper"\nbase_url = "https://k"\nusername = "u"\n'
        'password = "p"\n',
        encoding="utf-8",
    )
    assert list(load_file(path)) == ["k"]
    path.write_text("[nonsense]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key"):
        load_file(path)


def test_environment_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADRELAY_SWEEP_EVERY", "soon")
    with pytest.raises(ConfigError, match="LEADRELAY_SWEEP_EVERY"):
        load()


def test_the_shipped_example_config_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KUPER_PASSWORD", "CALLTOUCH_TOKEN", "SALESMAN_API_KEY", "ADMITAD_CLIENT_SECRET"):
        monkeypatch.setenv(name, "x-secret")
    example = Path(__file__).parents[2] / "leadrelay.example.toml"
    assert load_file(example)


# --- worker groups ---------------------------------------------------------------------

GROUPED = {
    "kuper-main": {**KUPER, "worker_group": "kuper"},
    "kuper-spare": KUPER,
    "calltouch-main": {
        "platform": "calltouch",
        "base_url": "https://c.example",
        "site_id": "1234",
        "access_token": "t",
        "worker_group": "kuper",
    },
}


@pytest.mark.parametrize(
    ("group", "queues"),
    [
        (None, ["leadrelay", "leadrelay.intake", "deliver.kuper-main", "deliver.kuper-spare",
                "deliver.calltouch-main"]),
        ("kuper", ["deliver.kuper-main", "deliver.calltouch-main"]),
        ("default", ["deliver.kuper-spare"]),
        ("control", ["leadrelay", "leadrelay.intake"]),
    ],
)  # fmt: skip
def test_a_worker_group_consumes_its_destinations_queues_and_serves_their_secrets_alone(
    group: str | None, queues: list[str]
) -> None:
    settings = load(destinations=parse_destinations(GROUPED), worker_group=group)
    assert [q.name for q in celery_config(settings)["task_queues"]] == queues
    assert [d.queue for d in served(settings, None)] == [
        q for q in queues if q.startswith("deliver.")
    ]
    assert [d.name for d in served(settings, "deliver.kuper-spare")] == ["kuper-spare"]


def test_a_worker_group_no_destination_names_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "leadrelay.toml"
    config.write_text(
        '[destinations.k]\nplatform = "kuper"\nbase_url = "https://k"\nusername = "u"\n'
        'password = "p"\nworker_group = "fast"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("LEADRELAY_CONFIG", str(config))
    monkeypatch.setenv("LEADRELAY_WORKER_GROUP", "kuper")
    with pytest.raises(ConfigError) as info:
        load()
    assert str(info.value) == (
        "LEADRELAY_WORKER_GROUP: no destination has worker_group = 'kuper' (groups: control, fast)"
    )
    monkeypatch.setenv("LEADRELAY_WORKER_GROUP", "Fast!")
    with pytest.raises(ConfigError, match="LEADRELAY_WORKER_GROUP"):
        load()
    with pytest.raises(ConfigError, match=r"destinations\.k\.worker_group"):
        parse_destinations({"k": {**KUPER, "worker_group": "has space"}})
