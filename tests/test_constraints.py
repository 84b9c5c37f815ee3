"""constraints.txt, the pins `make install` applies: every dependency pyproject.toml declares is pinned inside its
declared range, and the environment the tests run in is the pinned one (else its numbers may differ from the
committed boards in their last bits)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, separator, pinned = line.partition("==")
        assert separator, f"constraints.txt: {line!r} is not a name==version pin"
        pins[canonicalize_name(name)] = pinned
    return pins


def declared_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]


def test_every_declared_dependency_is_pinned_inside_its_range():
    pins = pinned_versions()
    for requirement in declared_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is declared in pyproject.toml but not pinned: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {requirement.name}=={pins[name]}, outside pyproject.toml's {requirement}")


def test_the_declared_dependencies_run_at_their_pinned_versions():
    pins = pinned_versions()
    for requirement in declared_requirements():
        name = canonicalize_name(requirement.name)
        try:
            installed = version(name)
        except PackageNotFoundError:
            continue  # an optional dependency this environment does not have
        assert installed == pins[name], (
            f"{requirement.name} {installed} is installed, constraints.txt pins {pins[name]}: `make install` "
            "(pip install -c constraints.txt) or, after a deliberate upgrade, `make lock`")
