"""
The deployment files, checked the way the app reads them, since nothing here
runs them: docker-compose.yml as it is, and every Kubernetes overlay as
`kubectl kustomize` renders it (test_kustomize.py checks the rendered objects
against the API's schemas). Every command they run (service commands, health,
startup, liveness and readiness probes) exists in the project, with options its
program knows; every setting they pass is one the app reads; every
destination's queue is consumed by exactly one worker group, as the app itself
derives a group's queues; no secret is written in them; Redis keeps what it is
given; there is one beat; the image runs as an unprivileged user and installs
everything the processes need from pyproject.toml alone.
"""

from __future__ import annotations

import importlib.util
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
from celery.bin.beat import beat as beat_command
from celery.bin.worker import worker as worker_command
from flower.options import options as flower_options
from typer.main import get_command

from producers.cli import app as cli_app
from tests.integration.test_kustomize import (
    GROUP_VAR,
    K8S,
    OVERLAYS,
    of_kind,
    pod_spec,
    rendered,
    workers,
)
from worker.config import queue_name
from worker.errors import ConfigError
from worker.ops import metrics
from worker.platforms import destination_models
from worker.runtime import flower, heartbeat, probe
from worker.runtime.app import CONTROL_QUEUE, INTAKE_QUEUE, celery_config
from worker.settings import Settings, load, parse_destinations

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"
#: not applied by any overlay: the Secrets the pods read, with placeholders
SECRET_EXAMPLE = K8S / "base" / "secret.example.yaml"
#: compose mounts ./leadrelay.toml, a copy of this file
EXAMPLE_TOML = ROOT / "leadrelay.example.toml"

#: every LEADRELAY_* the app reads: Settings' fields (the destinations come from a file)
SETTINGS_VARS = {f"LEADRELAY_{name.upper()}" for name in Settings.model_fields} - {
    "LEADRELAY_DESTINATIONS"
}
#: variables read outside Settings, each declared by the module that reads it
PROCESS_VARS = set(flower.ENVIRONMENT) | set(metrics.ENVIRONMENT) | set(heartbeat.ENVIRONMENT)
#: what compose's own PostgreSQL image reads
POSTGRES_VARS = {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"}
#: names whose values are secret wherever they appear
SECRETISH = re.compile(r"PASSWORD|TOKEN|SECRET|API_KEY|BASIC_AUTH|DATABASE_URL")
CELERY_COMMANDS = {"worker", "beat", "flower", "inspect"}
#: the options each Celery program knows
CELERY_OPTIONS = {
    "worker": {o for param in worker_command.params for o in param.opts},
    "beat": {o for param in beat_command.params for o in param.opts},
}
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
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


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """(overlay, object) for every object of every overlay, as `kubectl apply -k` sends it."""
    return [(overlay, doc) for overlay in OVERLAYS for doc in rendered(overlay)]


def workloads() -> list[tuple[str, dict[str, Any]]]:
    return [(overlay, doc) for overlay, doc in manifests() if pod_spec(doc) is not None]


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for overlay, doc in workloads():
        spec = pod_spec(doc)
        assert spec is not None
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            yield f"{overlay} {doc['metadata']['name']}", c


def argv(container: dict[str, Any]) -> list[str]:
    """What a container runs: its command and its args."""
    return [*container["command"], *container.get("args", [])]


def config_maps(docs: list[dict[str, Any]] | None = None) -> dict[str, dict[str, str]]:
    docs = [doc for _, doc in manifests()] if docs is None else docs
    return {d["metadata"]["name"]: d["data"] for d in of_kind(docs, "ConfigMap")}


def secrets() -> dict[str, dict[str, str]]:
    docs = yaml.safe_load_all(SECRET_EXAMPLE.read_text("utf-8"))
    return {d["metadata"]["name"]: d["stringData"] for d in docs if d}


def k8s_destinations(overlay: str) -> dict[str, Any]:
    """The destinations file an overlay's ConfigMap mounts at LEADRELAY_CONFIG."""
    (toml,) = [
        data["leadrelay.toml"]
        for data in config_maps(rendered(overlay)).values()
        if "leadrelay.toml" in data
    ]
    tables: dict[str, Any] = tomllib.loads(toml)["destinations"]
    return tables


def compose_destinations() -> dict[str, Any]:
    tables: dict[str, Any] = tomllib.loads(EXAMPLE_TOML.read_text("utf-8"))["destinations"]
    return tables


def named_vars(tables: dict[str, Any]) -> set[str]:
    """The ${VAR}s a destinations file names."""
    return set(ENV_REF.findall(str(tables)))


def compose_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every command compose runs: services and health checks."""
    out: list[tuple[str, list[str]]] = []
    for name, svc in relay_services().items():
        out.append((f"compose {name}", svc["command"]))
        test = svc.get("healthcheck", {}).get("test")
        if test and test[0] == "CMD-SHELL" and "celery" in test[1]:
            # compose writes a shell's `$` as `$$`
            out.append((f"compose {name} healthcheck", shlex.split(test[1].replace("$$", "$"))))
    return out


def k8s_commands(overlay: str) -> list[tuple[str, list[str]]]:
    """(where, argv) of every command an overlay's pods run: containers and exec probes."""
    out: list[tuple[str, list[str]]] = []
    for where, c in containers():
        if where.startswith(f"{overlay} "):
            out.append((where, argv(c)))
            for kind in PROBES:
                command = c.get(kind, {}).get("exec", {}).get("command")
                if command:
                    out.append((f"{where} {kind}", command))
    return out


def worker_queues(command: list[str]) -> list[str] | None:
    """The -Q queues of a `celery -A worker worker` command, None for other commands."""
    if command[:4] != ["celery", "-A", "worker", "worker"]:
        return None
    assert "-Q" in command, f"a worker without -Q consumes only the default queue: {command}"
    return command[command.index("-Q") + 1].split(",")


def group_queues(where: str, group: str | None, tables: dict[str, Any]) -> list[str]:
    """
    The queues a worker started with LEADRELAY_WORKER_GROUP=`group` and no -Q
    consumes, as the app derives them; a group no destination names fails, as
    the worker would at start.
    """
    try:
        settings = load(worker_group=group, destinations=parse_destinations(tables))
    except ConfigError as exc:
        pytest.fail(f"{where}: the worker would stop at start: {exc}")
    return [queue.name for queue in celery_config(settings)["task_queues"]]


def k8s_consumed(overlay: str, tables: dict[str, Any]) -> list[str]:
    """Every queue the overlay's workers consume, once per worker Deployment consuming it."""
    consumed: list[str] = []
    for deployment in workers(rendered(overlay)):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        command = argv(container)
        assert "-Q" not in command, f"{overlay}: the group decides the queues, not -Q"
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        consumed += group_queues(
            f"{overlay} {deployment['metadata']['name']}", env.get(GROUP_VAR), tables
        )
    return consumed


# --- commands ---


def check_command(where: str, command: list[str]) -> None:
    """The program exists in the project, with the subcommands and options it is given."""
    if command[:2] == ["python", "-m"]:
        assert importlib.util.find_spec(command[2]) is not None, f"{where}: no module {command[2]}"
        if command[2] == probe.__name__:
            assert len(command) == 4 and command[3] in probe.CHECKS, where
        return
    if command[0] == "celery":
        assert command[1:3] == ["-A", "worker"], where
        assert command[3] in CELERY_COMMANDS, where
        if command[3] == "inspect":
            assert command[4] == "ping", where
            assert "celery@$HOSTNAME" in command, f"{where}: ping this worker, by its default name"
        for option in (arg.split("=", 1)[0] for arg in command[4:] if arg.startswith("-")):
            if command[3] == "flower":
                assert option.removeprefix("--") in flower_options, f"{where}: {option}"
            elif command[3] in CELERY_OPTIONS:
                assert option in CELERY_OPTIONS[command[3]], f"{where}: {option}"
        return
    assert command[0] == "leadrelay", where
    group: click.Command = get_command(cli_app)
    for arg in command[1:]:
        if arg.startswith("-") or not isinstance(group, click.Group):
            break
        assert arg in group.commands, f"{where}: `{' '.join(command)}`: no command {arg!r}"
        group = group.commands[arg]
    assert not isinstance(group, click.Group), f"{where}: `{' '.join(command)}` names a group"


@pytest.mark.parametrize(
    ("where", "command"), [pytest.param(w, c, id=w) for w, c in compose_commands()]
)
def test_every_compose_command_exists_in_the_project(where: str, command: list[str]) -> None:
    check_command(where, command)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_k8s_command_exists_in_the_project(overlay: str) -> None:
    commands = k8s_commands(overlay)
    assert commands
    for where, command in commands:
        check_command(where, command)


def test_compose_workers_keep_their_default_name_so_the_health_ping_reaches_them() -> None:
    for svc in relay_services().values():
        command = svc["command"]
        if worker_queues(command) is not None:
            assert "-n" not in command and "--hostname" not in command, command


def assert_each_consumed_once(consumed: list[str], tables: dict[str, Any]) -> None:
    """Every queue of these destinations, and beat's and intake's, once; no other."""
    wanted = [CONTROL_QUEUE, INTAKE_QUEUE, *(queue_name(name) for name in tables)]
    unread = sorted(set(wanted) - set(consumed))
    assert not unread, f"queues no worker consumes (never delivered): {unread}"
    twice = sorted({q for q in consumed if consumed.count(q) > 1})
    assert not twice, f"queues two worker groups consume: {twice}"
    assert sorted(consumed) == sorted(wanted), "a worker consumes a queue no destination has"


def test_every_queue_is_consumed_by_exactly_one_compose_worker() -> None:
    groups = [q for svc in relay_services().values() if (q := worker_queues(svc["command"]))]
    consumed = [queue for group in groups for queue in group]
    assert_each_consumed_once(consumed, compose_destinations())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_queue_is_consumed_by_exactly_one_k8s_worker_group(overlay: str) -> None:
    """
    Each worker Deployment's queues come from its LEADRELAY_WORKER_GROUP and the
    destinations file the overlay mounts, the way the worker derives them: a
    destination whose group has no Deployment is never delivered, and a group
    no destination names stops its worker.
    """
    tables = k8s_destinations(overlay)
    assert_each_consumed_once(k8s_consumed(overlay, tables), tables)


def test_the_production_groups_serve_the_example_destinations_too() -> None:
    """leadrelay.example.toml, put in the ConfigMap as it is, is served by the same groups."""
    tables = compose_destinations()
    assert_each_consumed_once(k8s_consumed("production", tables), tables)


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
    allowed = SETTINGS_VARS | PROCESS_VARS | named_vars(compose_destinations())
    allowed |= {var for overlay in OVERLAYS for var in named_vars(k8s_destinations(overlay))}
    assert passed_vars() - allowed == set()


def test_every_secret_the_destinations_name_is_passed() -> None:
    compose_env = set(next(iter(relay_services().values()))["environment"])
    assert named_vars(compose_destinations()) <= compose_env
    for overlay in OVERLAYS:
        assert named_vars(k8s_destinations(overlay)) <= set(secrets()["leadrelay"]), overlay


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
    for tables in (compose_destinations(), *map(k8s_destinations, OVERLAYS)):
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
    k8s_files = [p for p in K8S.rglob("*") if p.suffix in (".yaml", ".env", ".toml")]
    texts = [COMPOSE.read_text("utf-8")] + [p.read_text("utf-8") for p in k8s_files]
    assert not any(flower.LOCAL_VAR in text for text in texts)
    for overlay in OVERLAYS:
        (flower_pod,) = [
            c
            for where, c in containers()
            if where.startswith(f"{overlay} ") and "flower" in c["command"]
        ]
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
    for overlay in OVERLAYS:
        k8s_beats = [
            doc
            for doc in rendered(overlay)
            if any(
                c["command"][3:4] == ["beat"] for c in (pod_spec(doc) or {}).get("containers", [])
            )
        ]
        assert len(k8s_beats) == 1, overlay
        (beat,) = k8s_beats
        assert beat["kind"] == "Deployment"
        assert beat["spec"]["replicas"] == 1
        assert beat["spec"]["strategy"]["type"] == "Recreate"
        assert not [
            so
            for so in of_kind(rendered(overlay), "ScaledObject")
            if so["spec"]["scaleTargetRef"]["name"] == beat["metadata"]["name"]
        ]


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


def test_k8s_pods_are_non_root_with_resources() -> None:
    for overlay, doc in workloads():
        spec = pod_spec(doc)
        assert spec is not None
        where = f"{overlay} {doc['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] != 0, where
    for where, c in containers():
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
        assert {"cpu", "memory"} <= set(c["resources"]["limits"]), where
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, where


def test_k8s_workers_probe_their_heartbeat_for_liveness_and_the_broker_for_readiness() -> None:
    """
    Liveness never asks the broker (a Redis outage must not restart every
    worker); the heartbeat's directory is a writable emptyDir under a
    read-only root.
    """
    probe_cmd = ["python", "-m", probe.__name__]
    for overlay in OVERLAYS:
        for deployment in workers(rendered(overlay)):
            pod = deployment["spec"]["template"]["spec"]
            (c,) = pod["containers"]
            where = f"{overlay} {deployment['metadata']['name']}"
            assert c["livenessProbe"]["exec"]["command"] == [*probe_cmd, "live"], where
            assert c["readinessProbe"]["exec"]["command"] == [*probe_cmd, "ready"], where
            assert c["startupProbe"]["exec"]["command"][:3] == probe_cmd, where
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, where
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            beat_dir = Path(env.get(heartbeat.FILE_VAR) or heartbeat.DEFAULT_FILE).parent
            (mount,) = [m for m in c["volumeMounts"] if Path(m["mountPath"]) == beat_dir]
            assert not mount.get("readOnly"), where
            (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
            assert "emptyDir" in volume, where


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
    # the dependencies from the lock, every hash checked; then the project, adding none
    assert re.search(r"pip install --require-hashes -r requirements\.txt\s*$", dockerfile(), re.M)
    assert re.search(r"pip install --no-deps \.\s*$", dockerfile(), re.M), "the project, no deps"
    assert "[dev]" not in dockerfile() and "requirements-dev" not in dockerfile()


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
