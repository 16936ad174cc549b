"""Redis URLs: kombu's sentinel:// notation read, or refused by rule, never echoing a password."""

from __future__ import annotations

import pytest
import redis
from kombu import Connection
from pydantic import ValidationError
from redis.sentinel import SentinelConnectionPool

from worker import redis_urls
from worker.errors import ConfigError
from worker.runtime import probe
from worker.runtime.app import celery_config
from worker.settings import Settings, load

PW = "s3cr;t@pw"  # a ';' and an '@' in a password: written percent-encoded in a URL
QUOTED = "s3cr%3Bt%40pw"


def test_one_sentinel_with_its_port_and_database() -> None:
    parsed = redis_urls.parse_sentinel("sentinel://10.0.0.1:26380/2")
    assert parsed == redis_urls.SentinelURL(sentinels=(("10.0.0.1", 26380),), db=2)


def test_several_sentinels_the_default_port_and_the_database_at_the_end() -> None:
    """kombu's docs write the database after the last Sentinel: it is the database of all."""
    parsed = redis_urls.parse_sentinel(
        f"sentinel://:{QUOTED}@a:26379;sentinel://b;sentinel://c:1/5"
    )
    assert parsed.sentinels == (("a", 26379), ("b", redis_urls.SENTINEL_PORT), ("c", 1))
    assert (parsed.db, parsed.username, parsed.password) == (5, None, PW)
    assert PW not in repr(parsed)


def test_no_database_is_database_0_and_a_user_is_kept() -> None:
    parsed = redis_urls.parse_sentinel("sentinel://relay:pw@a:1;sentinel://relay:pw@b:2")
    assert (parsed.db, parsed.username, parsed.password) == (0, "relay", "pw")


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        (f"sentinel://:{QUOTED}@:26379", "names no host"),
        ("sentinel://a:port/0", "the port is not a number"),
        ("sentinel://a:1;redis://b:2/0", "Sentinel URL 2 does not start with sentinel://"),
        ("sentinel://a:1/0;sentinel://b:2/1", "more than one database"),
        ("sentinel://:pw-1@a:1;sentinel://:pw-2@b:2", "more than one password"),
        ("sentinel://a:1/zero", "must be a database number"),
        ("sentinel://a:1/0?ssl=true", "a query or fragment is not read"),
        (f"sentinel://:{PW}@a:1/0", "the port is not a number"),  # its ';' not encoded
    ],
)
def test_a_url_that_cannot_be_read_names_the_rule_not_the_url(url: str, rule: str) -> None:
    with pytest.raises(ValueError, match=rule) as caught:
        redis_urls.parse_sentinel(url)
    assert "s3cr" not in str(caught.value) and "pw-" not in str(caught.value)


def test_kombu_reads_the_database_and_password_from_every_form() -> None:
    """kombu takes them from the first Sentinel URL only; kombu_url writes them on every one."""
    url = f"sentinel://:{QUOTED}@a:26379;sentinel://b:26380/3"
    assert Connection(url).virtual_host == "/"  # as kombu alone would read it: database 0

    conn = Connection(redis_urls.parse_sentinel(url).kombu_url())
    assert (conn.transport_cls, conn.hostname, conn.virtual_host) == ("sentinel", "a", "3")
    assert conn.password == PW
    assert [Connection(alt).port for alt in conn.alt] == [26379, 26380]


def test_a_sentinel_client_asks_for_the_named_master_with_the_masters_credentials() -> None:
    """Nothing connects until a command: the client is built from the URL alone."""
    url = f"sentinel://:{QUOTED}@a:26379;sentinel://b:26380/3"
    client = redis_urls.client(url, "relay-master", socket_timeout=2)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "relay-master"
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"], kwargs["socket_timeout"]) == (3, PW, 2)
    assert kwargs["retry"].get_retries() == redis_urls.FAILOVER_RETRIES
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [26379, 26380]
    # a Sentinel has no password of its own here (kombu's reading); it gets the timeouts
    assert all(s.connection_pool.connection_kwargs.get("password") is None for s in sentinels)
    assert all(s.connection_pool.connection_kwargs["socket_timeout"] == 2 for s in sentinels)


def test_a_plain_url_gives_a_plain_client() -> None:
    client = redis_urls.client("redis://:pw@127.0.0.1:6390/4", None, socket_timeout=1)
    assert type(client.connection_pool) is redis.ConnectionPool
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["port"], kwargs["db"], kwargs["password"]) == (6390, 4, "pw")


def test_a_sentinel_client_without_a_master_name_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="LEADRELAY_REDIS_MASTER_NAME: required"):
        redis_urls.client("sentinel://a:26379/0", None)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("rediss://user:pw@h:6379/0", "rediss://user:***@h:6379/0"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        (
            f"sentinel://:{QUOTED}@a:1;sentinel://:{QUOTED}@b:2/0",
            "sentinel://:***@a:1;sentinel://:***@b:2/0",
        ),
    ],
)
def test_a_shown_url_hides_every_password(url: str, shown: str) -> None:
    assert redis_urls.shown_url(url) == shown


# --- settings: refused at start, naming the setting ---------------------------


def test_a_sentinel_broker_without_a_master_name_is_refused_at_start() -> None:
    with pytest.raises(ConfigError) as caught:
        load(broker_url=f"sentinel://:{QUOTED}@a:26379/0", destinations={})
    assert caught.value.key == "LEADRELAY_REDIS_MASTER_NAME"
    assert "LEADRELAY_BROKER_URL is a sentinel:// URL" in caught.value.problem
    assert "s3cr" not in str(caught.value)


def test_a_sentinel_redis_url_without_a_master_name_names_that_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From the environment, as a deployment sets it."""
    monkeypatch.setenv("LEADRELAY_REDIS_URL", "sentinel://a:26379/1")
    monkeypatch.delenv("LEADRELAY_REDIS_MASTER_NAME", raising=False)
    with pytest.raises(ConfigError, match="LEADRELAY_REDIS_URL is a sentinel:// URL"):
        load(destinations={})
    monkeypatch.setenv("LEADRELAY_REDIS_MASTER_NAME", "relay")
    assert load(destinations={}).limiter_url == "sentinel://a:26379/1"


def test_a_sentinel_url_that_cannot_be_read_is_refused_at_start_without_its_password() -> None:
    url = f"sentinel://:{QUOTED}@a:1/0;sentinel://b:2/1"
    with pytest.raises(ConfigError) as caught:
        load(broker_url=url, redis_master_name="relay", destinations={})
    assert caught.value.key == "LEADRELAY_BROKER_URL"
    assert "more than one database" in caught.value.problem
    with pytest.raises(ValidationError) as direct:
        Settings(broker_url=url, redis_master_name="relay")
    assert "s3cr" not in str(direct.value)


def test_a_sentinel_broker_goes_to_kombus_sentinel_transport_with_the_master_name() -> None:
    url = "sentinel://:pw@a:26379;sentinel://b:26380/2"
    config = celery_config(load(broker_url=url, redis_master_name="relay", destinations={}))
    assert config["broker_url"] == "sentinel://:pw@a:26379/2;sentinel://:pw@b:26380/2"
    assert config["broker_transport_options"] == {
        "visibility_timeout": 3600,
        "master_name": "relay",
    }


def test_a_redis_broker_keeps_its_url_and_options() -> None:
    config = celery_config(load(broker_url="redis://r:6379/1", destinations={}))
    assert config["broker_url"] == "redis://r:6379/1"
    assert config["broker_transport_options"] == {"visibility_timeout": 3600}


def test_the_readiness_probe_names_a_missing_master_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe reads the environment alone: the missing setting is its one line."""
    monkeypatch.setenv("LEADRELAY_BROKER_URL", "sentinel://127.0.0.1:1/0")
    monkeypatch.delenv("LEADRELAY_REDIS_MASTER_NAME", raising=False)
    ok, why = probe.ready()
    assert not ok
    assert why == "broker: LEADRELAY_REDIS_MASTER_NAME: required with a sentinel:// URL"
