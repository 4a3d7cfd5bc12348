"""Every ``helm install`` line in the docs renders: its ``--set`` values and ``-f`` files, through
Helm itself and the same object checks as tests/deploy/test_chart.py (the KEDA and Prometheus
operator APIs present, as a cluster with them has)."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from tests.deploy.test_chart import ALL_APIS, REPO, render

pytestmark = pytest.mark.deploy

FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def _scalar(text: str):
    """A --set value as Helm types it: true/false, integers, else a string."""
    if text in ("true", "false"):
        return text == "true"
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def _set(values: dict, path: str, value: str) -> None:
    *parents, leaf = path.split(".")
    for key in parents:
        values = values.setdefault(key, {})
    values[leaf] = _scalar(value)


def helm_lines():
    """(where, overlays) for each `helm install` line of a bash block; ``-f name`` is a file of the
    repository or, where none, the page's last yaml block before the command."""
    out = []
    for page in sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]:
        text = page.read_text()
        last_yaml = None
        for block in FENCE.finditer(text):
            lang, body = block.group(1), block.group(2)
            if lang == "yaml":
                last_yaml = yaml.safe_load(body)
                continue
            if lang != "bash":
                continue
            for n, line in enumerate(body.splitlines()):
                words = shlex.split(line, comments=True)
                if words[:2] != ["helm", "install"]:
                    continue
                where = f"{page.name}:{text.count(chr(10), 0, block.start(2)) + n + 1}"
                overlays: list[dict] = []
                sets: dict = {}
                args = iter(words[4:])
                for a in args:
                    if a == "--set":
                        key, _, value = next(args).partition("=")
                        _set(sets, key, value)
                    elif a == "-f":
                        name = next(args)
                        path = REPO / name
                        overlays.append(
                            yaml.safe_load(path.read_text()) if path.exists() else last_yaml
                        )
                    else:
                        pytest.fail(f"{where}: an argument the test does not know: {a}")
                out.append((where, [*overlays, sets] if sets else overlays))
    return out


def test_the_docs_have_helm_lines():
    assert len(helm_lines()) >= 5


@pytest.mark.parametrize(
    "where, overlays", helm_lines(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_a_helm_install_in_the_docs_renders(where, overlays):
    assert all(o is not None for o in overlays), f"{where}: -f names a file that is not there"
    assert render(*overlays, api_versions=ALL_APIS), where
