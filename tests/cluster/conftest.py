"""What the GPU stack pins, read from pyproject.toml and the Makefile, for the
launcher and GPU-stack tests."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def load_pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def exact_pins(requirements: list[str]) -> dict[str, str]:
    """name -> version for every `name==version` requirement."""
    pins = {}
    for text in requirements:
        requirement = Requirement(text)
        exact = [s.version for s in requirement.specifier if s.operator == "=="]
        if exact:
            pins[requirement.name.lower()] = exact[0]
    return pins


@pytest.fixture(scope="session")
def pyproject() -> dict:
    return load_pyproject()


@pytest.fixture(scope="session")
def gpu_pins(pyproject) -> dict[str, str]:
    return exact_pins(pyproject["project"]["optional-dependencies"]["gpu"])


@pytest.fixture(scope="session")
def makefile_torch_version() -> str:
    match = re.search(r"^TORCH_VERSION\s*:?=\s*(\S+)\s*$", (ROOT / "Makefile").read_text(), re.M)
    assert match, "the Makefile names no TORCH_VERSION"
    return match.group(1)
