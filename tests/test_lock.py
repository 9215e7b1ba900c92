"""Set-up installs exactly what requirements.lock pins, and the lock covers what the project asks for."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def locked() -> dict[str, str]:
    pins = re.findall(
        r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", (ROOT / "requirements.lock").read_text(), re.MULTILINE
    )
    return {canonicalize_name(name): version for name, version in pins}


def asked_for() -> list[Requirement]:
    requirements = []
    for name in ("requirements.txt", "requirements-dev.txt"):
        for text in (ROOT / name).read_text().splitlines():
            line = text.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                requirements.append(Requirement(line))
    return requirements


@pytest.mark.parametrize("requirement", asked_for(), ids=str)
def test_the_lock_pins_every_requirement_within_its_range(requirement: Requirement) -> None:
    version = locked().get(canonicalize_name(requirement.name))
    assert version is not None, f"{requirement.name} is not in requirements.lock: compile it again"
    assert requirement.specifier.contains(version, prereleases=True), f"{requirement} locked at {version}"


def test_every_pin_carries_a_hash() -> None:
    entries = re.split(r"\n(?=[A-Za-z0-9_.\-]+==)", (ROOT / "requirements.lock").read_text())
    unhashed = [
        e.split(" ", 1)[0] for e in entries if "==" in e.split("\n", 1)[0] and "--hash=sha256:" not in e
    ]
    assert unhashed == []


def test_the_environment_holds_the_locked_versions() -> None:
    for name, version in locked().items():
        assert metadata.version(name) == version, (
            f"{name}: installed {metadata.version(name)}, locked {version}"
        )
