"""The declared dependency floors are the tested versions, and both installs use those versions.

constraints.txt pins every package of the tested environment (.venv); pyproject.toml's lower bounds
must be those pins' major.minor (a floor below what is tested is a promise nobody checks), and the
Dockerfile and `make install` must install with `-c constraints.txt` and pin no torch of their own.
The checks take file contents, so they can be run against other versions of the files.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
CONSTRAINT = re.compile(r"(?:^|\s)(?:-c|--constraint)(?:\s+|=)[\"']?constraints\.txt\b")
TORCH_VERSION_SPEC = re.compile(r"\btorch\s*(?:===?|[<>~!]=?)")


def read(name: str) -> str:
    return (REPO / name).read_text(encoding="utf-8")


def constraint_pins(text: str) -> dict[str, Version]:
    """name -> pinned version; every line must be an exact `name==version`."""
    pins: dict[str, Version] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
            raise ValueError(f"constraints.txt: {line!r} is not an exact pin")
        pins[canonicalize_name(req.name)] = Version(specs[0].version)
    return pins


def floor_problems(pyproject_text: str, constraints_text: str) -> list[str]:
    """Each declared requirement (core and extras): pinned, its pin inside the declared range, and its
    lower bound no older than the pin's major.minor."""
    project = tomllib.loads(pyproject_text)["project"]
    pins = constraint_pins(constraints_text)
    groups = {"dependencies": project["dependencies"]}
    groups.update(
        {f"[{extra}]": reqs for extra, reqs in project.get("optional-dependencies", {}).items()}
    )
    problems = []
    for group, lines in groups.items():
        for line in lines:
            req = Requirement(line)
            pinned = pins.get(canonicalize_name(req.name))
            if pinned is None:
                problems.append(f"{group} {line}: not pinned in constraints.txt")
                continue
            if not req.specifier.contains(pinned, prereleases=True):
                problems.append(
                    f"{group} {line}: the tested {pinned} is outside the declared range"
                )
            floors = [
                Version(s.version) for s in req.specifier if s.operator in (">=", "~=", "==", "===")
            ]
            tested = Version(f"{pinned.major}.{pinned.minor}")
            if not floors:
                problems.append(f"{group} {line}: no lower bound (tested: {pinned})")
            elif max(floors) < tested:
                problems.append(
                    f"{group} {line}: floor {max(floors)} is older than the tested {tested} ({pinned})"
                )
    return problems


def _instructions(dockerfile_text: str) -> list[str]:
    """Logical Dockerfile instructions: comment lines dropped, continuation lines joined."""
    out: list[str] = []
    current = ""
    for raw in dockerfile_text.splitlines():
        if raw.strip().startswith("#"):
            continue  # a comment line, also inside a continued instruction
        current += raw.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.strip():
            out.append(current.strip())
        current = ""
    if current.strip():
        out.append(current.strip())
    return out


def _pip_installs(command: str) -> list[str]:
    return [
        part.strip()
        for part in re.split(r"&&|\|\||;", command)
        if re.search(r"\bpip3?\s+install\b", part)
    ]


def dockerfile_problems(text: str) -> list[str]:
    instructions = _instructions(text)
    problems = []
    if not any(re.match(r"COPY\s+(?:--\S+\s+)*.*\bconstraints\.txt\b", i) for i in instructions):
        problems.append("the Dockerfile does not COPY constraints.txt")
    installs = [p for i in instructions if i.startswith("RUN ") for p in _pip_installs(i[4:])]
    if not installs:
        problems.append("the Dockerfile has no pip install")
    for install in installs:
        # only the project itself may go without the constraints, and only with --no-deps (nothing resolved)
        if not CONSTRAINT.search(install) and "--no-deps" not in install.split():
            problems.append(f"pip install without -c constraints.txt: {install}")
        if TORCH_VERSION_SPEC.search(install):
            problems.append(f"a torch version of its own: {install}")
    if not any(re.search(r"(?:^|\s)[\"']?torch[\"']?(?:\s|$)", i) for i in installs):
        problems.append("no pip install of torch (by name, its version from constraints.txt)")
    for i in instructions:
        if re.match(r"ARG\s+TORCH_VERSION\b", i):
            problems.append(f"a torch version of its own: {i}")
    return problems


def makefile_problems(text: str, target: str = "$(VENV)/.installed") -> list[str]:
    lines = text.splitlines()
    heads = [n for n, line in enumerate(lines) if line.startswith(f"{target}:")]
    if len(heads) != 1:
        return [f"no single {target} rule in the Makefile"]
    head = heads[0]
    problems = []
    if "constraints.txt" not in lines[head].split(":", 1)[1].split():
        problems.append(f"{target} does not depend on constraints.txt")
    recipe = []
    for line in lines[head + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    installs = [p for line in recipe for p in _pip_installs(line)]
    if not installs:
        problems.append(f"{target} has no pip install")
    for install in installs:
        if not CONSTRAINT.search(install):
            problems.append(f"pip install without -c constraints.txt: {install}")
        if TORCH_VERSION_SPEC.search(install):
            problems.append(f"a torch version of its own: {install}")
    return problems


def test_declared_floors_are_the_tested_versions():
    assert floor_problems(read("pyproject.toml"), read("constraints.txt")) == []


def test_torch_pin_matches_pypi_and_the_pytorch_indexes():
    torch = constraint_pins(read("constraints.txt"))["torch"]
    assert not torch.local, "pin torch without +cpu/+cuXXX: the pin must match every index's build"
    pin = SpecifierSet(f"=={torch}")
    for build in (f"{torch}", f"{torch}+cpu", f"{torch}+cu130"):
        assert pin.contains(Version(build)), build


def test_dockerfile_installs_with_the_constraints():
    assert dockerfile_problems(read("Dockerfile")) == []


def test_makefile_venv_installs_with_the_constraints():
    assert makefile_problems(read("Makefile")) == []


def test_the_checks_catch_what_they_are_for():
    pins = "torch==2.13.0\nnumpy==2.4.6\n"
    assert floor_problems('[project]\ndependencies = ["torch>=2.4", "numpy>=2.4"]\n', pins) == [
        "dependencies torch>=2.4: floor 2.4 is older than the tested 2.13 (2.13.0)"
    ]
    assert floor_problems('[project]\ndependencies = ["torch>=2.13", "redis>=5"]\n', pins) == [
        "dependencies redis>=5: not pinned in constraints.txt"
    ]
    old_dockerfile = (
        "FROM python:3.12-slim-bookworm\nARG TORCH_VERSION=2.5.1\n"
        'RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"\n'
        'RUN pip install --no-cache-dir ".[sink]"\n'
    )
    assert len(dockerfile_problems(old_dockerfile)) == 6
    old_makefile = (
        "$(VENV)/.installed: pyproject.toml\n\tpython3 -m venv $(VENV)\n"
        "\t$(PY) -m pip install -q torch==2.13.0\n\t$(PY) -m pip install -q -e '.[local]'\n\ttouch $@\n"
    )
    assert len(makefile_problems(old_makefile)) == 4
