"""What a fresh install gets: the floors pyproject.toml declares are the versions .ci/floors tests."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


OPTIONAL = ("tensorboard", "razdel", "bench")  # extras whose floors the floors run tests too (through dev)


def _floors() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for extra in OPTIONAL for d in project["optional-dependencies"][extra]]
    out = {}
    for dep in deps:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", dep.replace(" ", ""))
        assert match, f"{dep!r}: declare a floor only (name>=version), no cap"
        out[match.group(1).lower()] = match.group(2)
    return out


def test_every_floor_is_pinned_in_the_floors_run() -> None:
    pins = dict(line.split("==") for line in (REPO / ".ci" / "floors.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    floors = _floors()
    assert floors.pop("torch") == "2.4"  # the floors run uses the README's CPU torch instead (see floors.txt)
    assert {k.lower(): Version(v) for k, v in pins.items()} == {k: Version(v) for k, v in floors.items()}


def test_ci_installs_as_the_readme_says_and_runs_both_suites() -> None:
    readme, ci = (REPO / "README.md").read_text(), (REPO / ".ci" / "run").read_text()
    assert "pip install torch==2.13.0 && pip install -e \".[dev,glove]\"" in readme
    assert "python3 -m pip install -q torch==2.13.0" in ci and "python3 -m pip install -q -e \".[dev,glove]\"" in ci
    assert "python3 -m pytest -q" in ci and "bash .ci/floors" in ci


def test_dev_installs_every_optional_part_the_tests_use() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert f"lmbench[{','.join(OPTIONAL)}]" in extras["dev"]
