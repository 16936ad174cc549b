"""
The deployment files, checked as the app reads them: they parse, every command
they run exists in the project, every setting they pass is one the app reads,
and no secret is written in them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from producers.cli import app as cli_app
from worker.settings import Settings

ROOT = Path(__file__).parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
#: variables others read: Flower, prometheus_client, the destinations file's ${VAR}s
OTHER_VARS = {
    "FLOWER_BASIC_AUTH",
    "LEADRELAY_FLOWER_LOCAL",
    "PROMETHEUS_MULTIPROC_DIR",
    "KUPER_PASSWORD",
    "CALLTOUCH_TOKEN",
    "SALESMAN_API_KEY",
    "ADMITAD_CLIENT_SECRET",
    "POD_NAME",
}
SETTINGS_VARS = {f"LEADRELAY_{name.upper()}" for name in Settings.model_fields}


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def manifests() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text("utf-8")) if doc]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec.get("template", {}).get("spec", {}).get("containers", [])


def commands() -> list[list[str]]:
    ours = [svc for svc in compose()["services"].values() if svc.get("image") == "leadrelay:latest"]
    out = [svc["command"] for svc in ours if "command" in svc]
    out += [c["command"] for doc in manifests() for c in containers(doc) if "command" in c]
    return out


CLI_COMMANDS = set(get_command(cli_app).commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", commands(), ids=lambda c: " ".join(c[:4]))
def test_every_command_exists_in_the_project(command: list[str]) -> None:
    if command[0] == "celery":
        assert command[1:3] == ["-A", "worker"]
        assert command[3] in {"worker", "beat", "flower", "inspect"}
    elif command[0] == "sh":
        assert "celery -A worker inspect ping" in command[-1]
    else:
        assert command[0] == "leadrelay"
        assert command[1] in CLI_COMMANDS


def test_every_setting_passed_is_one_the_app_reads() -> None:
    passed: set[str] = set()
    for svc in compose()["services"].values():
        passed |= set(svc.get("environment") or {})
    for doc in manifests():
        if doc["kind"] in ("ConfigMap", "Secret"):
            passed |= {k for k in (doc.get("data") or doc.get("stringData") or {}) if k.isupper()}
    text = (ROOT / "deploy" / "env.example").read_text(encoding="utf-8")
    passed |= set(re.findall(r"^([A-Z_]+)=", text, re.M))
    unknown = {
        v
        for v in passed
        if v
        not in SETTINGS_VARS | OTHER_VARS | {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"}
    }
    assert unknown == set()
    listed = set(re.findall(r"^([A-Z_]+)=", text, re.M))
    assert listed >= SETTINGS_VARS - {"LEADRELAY_DESTINATIONS"}  # (the destinations: a file)


def test_no_secret_is_written_in_the_files() -> None:
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    for line in text.splitlines():
        if re.search(r"(PASSWORD|TOKEN|API_KEY|SECRET|BASIC_AUTH)\s*:", line):
            assert "${" in line, line
    for doc in manifests():
        if doc["kind"] == "Secret":
            assert set((doc.get("stringData") or {}).values()) <= {
                v for v in (doc.get("stringData") or {}).values() if "CHANGE-ME" in v
            }


def test_redis_keeps_what_it_is_given() -> None:
    command = " ".join(compose()["services"]["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command


def test_exactly_one_beat() -> None:
    beats = [
        s for s in compose()["services"].values() if s.get("command", [None] * 4)[3:4] == ["beat"]
    ]
    assert len(beats) == 1
    (beat,) = [
        d for d in manifests() if d["kind"] == "Deployment" and "beat" in d["metadata"]["name"]
    ]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"


def test_flower_has_auth_and_the_image_does_not_run_as_root() -> None:
    assert "FLOWER_BASIC_AUTH" in compose()["services"]["flower"]["environment"]
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    user = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert user and user[-1] not in ("root", "0")
