"""
The deployment files, checked the way the app reads them, since nothing here
runs them: they parse; every command they run (service commands, health and
liveness probes) exists in the project; every setting they pass is one the
app reads; every destination's queue is consumed by exactly one worker group;
no secret is written in them; Redis keeps what it is given; there is one beat;
the image runs as an unprivileged user and installs everything the processes
need from pyproject.toml alone.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from typer.main import get_command

from producers.cli import app as cli_app
from worker.config import queue_name
from worker.ops import metrics
from worker.platforms import destination_models
from worker.runtime import flower
from worker.runtime.app import CONTROL_QUEUE, INTAKE_QUEUE
from worker.settings import Settings, parse_destinations

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"
MANIFESTS = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
#: compose mounts ./leadrelay.toml, a copy of this file
EXAMPLE_TOML = ROOT / "leadrelay.example.toml"

#: every LEADRELAY_* the app reads: Settings' fields (the destinations come from a file)
SETTINGS_VARS = {f"LEADRELAY_{name.upper()}" for name in Settings.model_fields} - {
    "LEADRELAY_DESTINATIONS"
}
#: variables read outside Settings, each declared by the module that reads it
PROCESS_VARS = set(flower.ENVIRONMENT) | set(metrics.ENVIRONMENT)
#: what compose's own PostgreSQL image reads
POSTGRES_VARS = {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"}
#: names whose values are secret wherever they appear
SECRETISH = re.compile(r"PASSWORD|TOKEN|SECRET|API_KEY|BASIC_AUTH|DATABASE_URL")
CELERY_COMMANDS = {"worker", "beat", "flower", "inspect"}
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


# --- reading the files ---


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def relay_services() -> dict[str, dict[str, Any]]:
    """Compose services that run our image (everything but Redis and PostgreSQL)."""
    return {
        name: svc
        for name, svc in compose()["services"].items()
        if svc.get("image", "").startswith("leadrelay")
    }


def manifests() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text("utf-8")) if doc]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: dict[str, Any] | None = spec.get("template", {}).get("spec")
    return pod


def workloads() -> list[dict[str, Any]]:
    return [doc for doc in manifests() if pod_spec(doc) is not None]


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in workloads():
        spec = pod_spec(doc)
        assert spec is not None
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            yield doc["metadata"]["name"], c


def config_maps() -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d["data"] for d in manifests() if d["kind"] == "ConfigMap"}


def secrets() -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d["stringData"] for d in manifests() if d["kind"] == "Secret"}


def k8s_destinations() -> dict[str, Any]:
    """The destinations file the ConfigMap mounts at LEADRELAY_CONFIG."""
    (toml,) = [
        data["leadrelay.toml"] for data in config_maps().values() if "leadrelay.toml" in data
    ]
    tables: dict[str, Any] = tomllib.loads(toml)["destinations"]
    return tables


def compose_destinations() -> dict[str, Any]:
    tables: dict[str, Any] = tomllib.loads(EXAMPLE_TOML.read_text("utf-8"))["destinations"]
    return tables


def named_vars(tables: dict[str, Any]) -> set[str]:
    """The ${VAR}s a destinations file names."""
    return set(ENV_REF.findall(str(tables)))


def every_command() -> list[tuple[str, list[str]]]:
    """(where, argv) of every command the files run: services, health checks, probes."""
    out: list[tuple[str, list[str]]] = []
    for name, svc in relay_services().items():
        out.append((f"compose {name}", svc["command"]))
        test = svc.get("healthcheck", {}).get("test")
        if test and test[0] == "CMD-SHELL" and "celery" in test[1]:
            # compose writes a shell's `$` as `$$`
            out.append((f"compose {name} healthcheck", shlex.split(test[1].replace("$$", "$"))))
    for where, c in containers():
        out.append((f"k8s {where}", c["command"]))
        probe = c.get("livenessProbe", {}).get("exec", {}).get("command")
        if probe:
            assert probe[:2] == ["sh", "-c"], probe
            out.append((f"k8s {where} liveness", shlex.split(probe[2])))
    return out


def worker_queues(command: list[str]) -> list[str] | None:
    """The -Q queues of a `celery -A worker worker` command, None for other commands."""
    if command[:4] != ["celery", "-A", "worker", "worker"]:
        return None
    assert "-Q" in command, f"a worker without -Q consumes only the default queue: {command}"
    return command[command.index("-Q") + 1].split(",")


# --- commands ---


@pytest.mark.parametrize(
    ("where", "command"), [pytest.param(w, c, id=w) for w, c in every_command()]
)
def test_every_command_exists_in_the_project(where: str, command: list[str]) -> None:
    if command[0] == "celery":
        assert command[1:3] == ["-A", "worker"], where
        assert command[3] in CELERY_COMMANDS, where
        if command[3] == "inspect":
            assert command[4] == "ping", where
            assert "celery@$HOSTNAME" in command, f"{where}: ping this worker, by its default name"
        return
    assert command[0] == "leadrelay", where
    group: click.Command = get_command(cli_app)
    for arg in command[1:]:
        if arg.startswith("-") or not isinstance(group, click.Group):
            break
        assert arg in group.commands, f"{where}: `{' '.join(command)}`: no command {arg!r}"
        group = group.commands[arg]
    assert not isinstance(group, click.Group), f"{where}: `{' '.join(command)}` names a group"


def test_workers_keep_their_default_name_so_the_liveness_ping_reaches_them() -> None:
    commands = [c["command"] for _, c in containers()]
    commands += [svc["command"] for svc in relay_services().values()]
    for command in commands:
        if worker_queues(command) is not None:
            assert "-n" not in command and "--hostname" not in command, command


@pytest.mark.parametrize(
    ("where", "destinations", "commands"),
    [
        (
            "compose",
            compose_destinations(),
            [svc["command"] for svc in relay_services().values()],
        ),
        ("k8s", k8s_destinations(), [c["command"] for _, c in containers()]),
    ],
    ids=["compose", "k8s"],
)
def test_every_queue_is_consumed_by_exactly_one_worker_group(
    where: str, destinations: dict[str, Any], commands: list[list[str]]
) -> None:
    groups = [q for q in map(worker_queues, commands) if q is not None]
    consumed = [queue for group in groups for queue in group]
    wanted = {CONTROL_QUEUE, INTAKE_QUEUE} | {queue_name(name) for name in destinations}
    assert sorted(consumed) == sorted(wanted), f"{where}: every queue once, no unknown queue"


# --- settings ---


def passed_vars() -> set[str]:
    """Every variable name the files give a relay process."""
    names: set[str] = set()
    for svc in relay_services().values():
        names |= set(svc.get("environment") or {})
    for _, c in containers():
        names |= {e["name"] for e in c.get("env", [])}
    for data in config_maps().values():
        names |= {k for k in data if re.fullmatch(r"[A-Z][A-Z0-9_]*", k)}
    for data in secrets().values():
        names |= set(data)
    return names


def test_every_setting_passed_is_one_the_app_reads() -> None:
    allowed = (
        SETTINGS_VARS
        | PROCESS_VARS
        | named_vars(compose_destinations())
        | named_vars(k8s_destinations())
    )
    assert passed_vars() - allowed == set()


def test_every_secret_the_destinations_name_is_passed() -> None:
    compose_env = set(next(iter(relay_services().values()))["environment"])
    assert named_vars(compose_destinations()) <= compose_env
    assert named_vars(k8s_destinations()) <= set(secrets()["leadrelay"])


def env_example() -> dict[str, str]:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, re.M))


def test_env_example_lists_every_variable_with_the_app_s_default() -> None:
    listed = env_example()
    wanted = SETTINGS_VARS | PROCESS_VARS | named_vars(compose_destinations()) | POSTGRES_VARS
    assert wanted - {"POSTGRES_USER", "POSTGRES_DB"} <= set(listed)
    assert set(listed) - wanted == set()
    for var in SETTINGS_VARS:
        field = var.removeprefix("LEADRELAY_").lower()
        default = Settings.model_fields[field].default
        shown = Settings.model_validate({field: listed[var] or None})
        assert getattr(shown, field) == default, f"{var}={listed[var]} is not the default"
    for var in PROCESS_VARS | named_vars(compose_destinations()):
        assert listed[var] == "", f"{var}: a secret or a switch, unset by default"


def test_the_destinations_files_parse_and_name_their_secrets_only_as_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret_fields = {
        name
        for model in destination_models()
        for name, field in model.model_fields.items()
        if "SecretStr" in str(field.annotation)
    }
    assert secret_fields
    for tables in (compose_destinations(), k8s_destinations()):
        for var in named_vars(tables):
            monkeypatch.setenv(var, "x")
        assert set(parse_destinations(tables)) == set(tables)
        for name, table in tables.items():
            for key in secret_fields & set(table):
                assert ENV_REF.fullmatch(table[key]), f"{name}.{key} must be a ${{VAR}}"


# --- secrets ---


def test_compose_writes_no_secret_only_references() -> None:
    for name, svc in compose()["services"].items():
        for var, value in (svc.get("environment") or {}).items():
            if not SECRETISH.search(var):
                continue
            if var == "LEADRELAY_DATABASE_URL":
                password = re.match(r"^\w+://[^:/@]+:([^@]*)@", value)
                assert password and password.group(1).startswith("${"), f"{name}: {var}"
            else:
                assert value is None or str(value).startswith("${"), f"{name}: {var}={value}"
    assert "${FLOWER_BASIC_AUTH:?" in str(compose()["services"]["flower"]["environment"])


def test_k8s_writes_no_secret_outside_the_example_secret() -> None:
    for where, c in containers():
        for e in c.get("env", []):
            if SECRETISH.search(e["name"]):
                assert "secretKeyRef" in e.get("valueFrom", {}), f"{where}: {e['name']}"
    for name, data in config_maps().items():
        for key, value in data.items():
            assert not SECRETISH.search(key), f"ConfigMap {name}: {key}"
            assert not re.search(r"://[^/\s:@]+:[^@\s]+@", value), f"ConfigMap {name}: {key}"
    for name, data in secrets().items():
        for key, value in data.items():
            assert "CHANGE-ME" in value, f"Secret {name}: {key} must be a placeholder"
    # applied unedited, the example cannot open Flower: its password is a placeholder
    (example_auth,) = [d[flower.AUTH_VAR] for d in secrets().values() if flower.AUTH_VAR in d]
    assert flower.problem_with(example_auth.split(",")) is not None


def test_no_file_lets_flower_run_without_auth() -> None:
    texts = [COMPOSE.read_text("utf-8")] + [p.read_text("utf-8") for p in MANIFESTS]
    assert not any(flower.LOCAL_VAR in text for text in texts)
    (flower_pod,) = [c for where, c in containers() if "flower" in c["command"]]
    (auth,) = [e for e in flower_pod["env"] if e["name"] == flower.AUTH_VAR]
    assert auth["valueFrom"]["secretKeyRef"]["name"] in secrets()


# --- Redis, beat, health ---


def test_redis_keeps_what_it_is_given() -> None:
    command = " ".join(compose()["services"]["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command


def test_exactly_one_beat() -> None:
    beats = [s for s in relay_services().values() if s["command"][3:4] == ["beat"]]
    assert len(beats) == 1
    assert beats[0].get("deploy", {}).get("replicas", 1) == 1
    k8s_beats = [
        doc
        for doc in workloads()
        if any(c["command"][3:4] == ["beat"] for c in pod_spec(doc)["containers"])  # type: ignore[index]
    ]
    assert len(k8s_beats) == 1
    (beat,) = k8s_beats
    assert beat["kind"] == "Deployment"
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"


def test_compose_starts_in_order_and_checks_health() -> None:
    services = compose()["services"]
    for name, svc in relay_services().items():
        depends = svc["depends_on"]
        for target, cond in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
        if name == "migrate":
            assert depends == {"postgres": {"condition": "service_healthy"}}
            assert svc["restart"] == "no"
        else:
            assert depends["migrate"] == {"condition": "service_completed_successfully"}
            assert depends["redis"] == {"condition": "service_healthy"}
        if worker_queues(svc["command"]) is not None or name == "flower":
            assert "healthcheck" in svc, f"{name} has no healthcheck"


def test_k8s_pods_are_non_root_with_resources_and_workers_have_liveness() -> None:
    for doc in workloads():
        spec = pod_spec(doc)
        assert spec is not None
        assert spec["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        assert spec["securityContext"]["runAsUser"] != 0
    for where, c in containers():
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
        assert {"cpu", "memory"} <= set(c["resources"]["limits"]), where
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
        if worker_queues(c["command"]) is not None:
            assert "exec" in c["livenessProbe"], where


# --- the image ---


def dockerfile() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


def test_the_image_is_multi_stage_slim_and_runs_as_a_user() -> None:
    stages = re.findall(r"^FROM\s+(\S+)", dockerfile(), re.M)
    assert len(stages) >= 2
    assert all(stage == "python:3.11-slim" for stage in stages)
    users = re.findall(r"^USER\s+(\S+)", dockerfile(), re.M)
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    last_stage = dockerfile().rsplit("FROM ", 1)[1]
    assert "pip install" not in last_stage, "the run stage copies the build, installs nothing"
    assert re.search(r"pip install \.\s*$", dockerfile(), re.M), "install from pyproject.toml"
    assert "[dev]" not in dockerfile()


def copied_sources() -> list[str]:
    """The repository paths the build stage COPYs."""
    paths: list[str] = []
    for line in re.findall(r"^COPY\s+(?!--from)(.+)$", dockerfile(), re.M):
        *sources, _dest = line.split()
        paths += sources
    return paths


@pytest.mark.timeout(300)
def test_the_image_s_install_holds_what_every_process_needs(tmp_path: Path) -> None:
    """
    Build the wheel `pip install .` would install, from the files the
    Dockerfile copies and nothing else: it must hold every module, the
    migrations `leadrelay db upgrade` runs, the limiter's Lua scripts and the
    `leadrelay` console script.
    """
    src = tmp_path / "src"
    src.mkdir()
    for rel in copied_sources():
        origin = ROOT / rel
        assert origin.exists(), f"the Dockerfile copies {rel}, which is not in the repository"
        if origin.is_dir():
            shutil.copytree(origin, src / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(origin, src / rel)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
        check=True,
        timeout=280,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("leadrelay-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        p.relative_to(ROOT).as_posix()
        for package in ("worker", "producers")
        for p in (ROOT / package).rglob("*")
        if p.suffix in (".py", ".lua", ".mako") and "__pycache__" not in p.parts
    }
    assert wanted - names == set()
    assert any(n.startswith("worker/ledger/migrations/versions/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "leadrelay = producers.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
