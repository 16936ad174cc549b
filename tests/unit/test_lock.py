"""
The lock files: every dependency pinned, with hashes, inside pyproject's ranges;
kombu, whose internals `worker/runtime/broker.py` subclasses, pinned exactly in
both. A pyproject change that the lock does not follow fails here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
#: the image's lock (no extras) and the developers' and CI's (every extra)
LOCKS = {"requirements.txt": (), "requirements-dev.txt": ("dev", "sandbox")}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", re.M)


def pins(name: str) -> dict[str, str]:
    text = (ROOT / name).read_text(encoding="utf-8")
    return {canonicalize_name(n): v for n, v in PIN.findall(text)}


def wanted(extras: tuple[str, ...]) -> list[Requirement]:
    project = PYPROJECT["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        found += [Requirement(r) for r in project["optional-dependencies"][extra]]
    own = canonicalize_name(project["name"])
    return [r for r in found if canonicalize_name(r.name) != own]


@pytest.mark.parametrize(("lock", "extras"), LOCKS.items())
def test_every_dependency_is_pinned_inside_its_range_with_hashes(
    lock: str, extras: tuple[str, ...]
) -> None:
    pinned = pins(lock)
    for req in wanted(extras):
        name = canonicalize_name(req.name)
        assert name in pinned, f"{lock} does not pin {req.name}"
        assert req.specifier.contains(pinned[name], prereleases=True), (
            f"{lock}: {req.name}=={pinned[name]} is outside pyproject's {req.specifier}"
        )
    text = (ROOT / lock).read_text(encoding="utf-8")
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        if PIN.match(block):
            assert "--hash=sha256:" in block, f"{lock}: no hash for {block.split()[0]}"


def test_kombu_is_pinned_exactly_where_its_internals_are_used() -> None:
    [kombu] = [r for r in wanted(()) if canonicalize_name(r.name) == "kombu"]
    [spec] = list(kombu.specifier)
    assert spec.operator == "==", "kombu: broker.py subclasses its internals, pin it exactly"
    assert {pins(lock)["kombu"] for lock in LOCKS} == {spec.version}


def test_the_image_lock_carries_no_development_or_emulator_package() -> None:
    image = pins("requirements.txt")
    for absent in ("pytest", "mypy", "ruff", "starlette", "uvicorn", "playwright"):
        assert absent not in image
