"""Configuration: the destinations file, ${ENV} references, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.errors import ConfigError
from worker.platforms.kuper import KuperDestination
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


def test_a_missing_env_reference_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match=r"destinations\.k\.password: names \$\{NOPE_NOT_SET\}"):
        parse_destinations({"k": {**KUPER, "password": "${NOPE_NOT_SET}"}})


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
