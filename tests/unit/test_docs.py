"""The docs run as written: every command in a ```bash block of README.md, CONTRIBUTING.md and
docs/*.md is checked against the real thing, every EMBED_* variable they name is a real setting,
and every relative link resolves.

- ``embed-worker ...`` and ``embed-loadgen ...`` lines are parsed by the commands' own argument
  parsers (an unknown subcommand, flag or choice fails; ``--help`` is fine);
- ``make X`` names a target of the Makefile;
- ``.venv/bin/python -m pytest ...`` names paths that exist and markers that are declared.

What they do when run is covered elsewhere: the demo, the sink, query, dlq and loadgen commands
each have an integration test of their own.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from worker.config import ENV_PREFIX, Settings
from worker.settings_doc import _rows

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [REPO / "README.md", REPO / "CONTRIBUTING.md", *(REPO / "docs").glob("*.md")],
    key=lambda p: str(p),
)
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
ENV_NAME = re.compile(r"\bEMBED_[A-Z0-9_]*[A-Z0-9]\b")
# Names that are not settings: the prefix itself, and families written with a wildcard.
NOT_SETTINGS = {"EMBED_", "EMBED_KAFKA__SSL_", "EMBED_KAFKA__SASL_"}


def commands(page: Path) -> list[tuple[int, list[str]]]:
    """(line number, argv) of each command in the page's bash blocks, continuation lines joined,
    environment assignments in front of it dropped."""
    text = page.read_text()
    out = []
    for block in BLOCK.finditer(text):
        first_line = text.count("\n", 0, block.start(1)) + 1
        joined = block.group(1).replace("\\\n", " ")
        for n, line in enumerate(joined.splitlines()):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                words = shlex.split(line, comments=True)
            except ValueError as exc:
                pytest.fail(f"{page.name}:{first_line + n}: cannot split {line!r}: {exc}")
            for part in _pipeline(words):
                while part and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", part[0]):
                    part = part[1:]
                if part:
                    out.append((first_line + n, part))
    return out


def _pipeline(words: list[str]) -> list[list[str]]:
    parts, current = [], []
    for w in words:
        if w in ("|", "&&", "||", ";"):
            parts.append(current)
            current = []
        else:
            current.append(w)
    parts.append(current)
    return parts


def all_commands() -> list[tuple[str, list[str]]]:
    return [(f"{page.relative_to(REPO)}:{n}", argv) for page in PAGES for n, argv in commands(page)]


def _program(argv: list[str]) -> str:
    return Path(argv[0]).name


def _parses(parser, args: list[str]) -> str | None:
    """None when the parser takes ``args`` (``--help`` included), else its complaint."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(args)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return err.getvalue().strip().splitlines()[-1]
    return None


def test_the_docs_have_commands_to_check():
    progs = {_program(argv) for _, argv in all_commands()}
    assert {"embed-worker", "embed-loadgen", "make"} <= progs


@pytest.mark.parametrize(
    "where, argv",
    [(w, a) for w, a in all_commands() if _program(a) == "embed-worker"],
    ids=lambda v: v if isinstance(v, str) else " ".join(v)[:60],
)
def test_embed_worker_commands_parse(where, argv):
    from worker.cli import build_parser

    parser, _ = build_parser()
    problem = _parses(parser, argv[1:])
    assert problem is None, f"{where}: {' '.join(argv)}: {problem}"


@pytest.mark.parametrize(
    "where, argv",
    [(w, a) for w, a in all_commands() if _program(a) == "embed-loadgen"],
    ids=lambda v: v if isinstance(v, str) else " ".join(v)[:60],
)
def test_embed_loadgen_commands_parse(where, argv):
    from loadgen.cli import build_parser

    problem = _parses(build_parser(), argv[1:])
    assert problem is None, f"{where}: {' '.join(argv)}: {problem}"


def test_make_targets_exist():
    targets = set(re.findall(r"^([A-Za-z][\w.-]*):", (REPO / "Makefile").read_text(), re.M))
    for where, argv in all_commands():
        if _program(argv) != "make":
            continue
        wanted = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]
        missing = [t for t in wanted if t not in targets]
        assert not missing, f"{where}: {' '.join(argv)}: no Makefile target {missing}"


def test_pytest_commands_name_real_paths_and_markers():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    markers = {m.split(":")[0] for m in config["tool"]["pytest"]["ini_options"]["markers"]}
    for where, argv in all_commands():
        if argv[1:3] != ["-m", "pytest"]:
            continue
        args = argv[3:]
        for i, a in enumerate(args):
            if a == "-m":
                assert set(re.findall(r"\w+", args[i + 1])) - {"not", "and", "or"} <= markers, where
            elif not a.startswith("-") and (i == 0 or args[i - 1] not in ("-m", "-k")):
                assert (REPO / a.split("::")[0]).exists(), f"{where}: no such test path {a}"


def test_every_setting_the_docs_name_exists():
    real = {env for env, *_ in _rows(Settings, ENV_PREFIX, "")}
    for page in PAGES:
        for name in set(ENV_NAME.findall(page.read_text())) - NOT_SETTINGS:
            assert name in real or any(r.startswith(name + "__") for r in real), (
                f"{page.relative_to(REPO)} names {name}, which is not a setting"
            )


def anchors(page: Path) -> set[str]:
    """The heading anchors GitHub makes: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.*)$", text, re.M)
    }


def test_relative_links_and_their_anchors_resolve():
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = page.parent / path if path else page
            assert dest.exists(), (
                f"{page.relative_to(REPO)} links to {target}, which does not exist"
            )
            if anchor and dest.suffix == ".md":
                assert anchor in anchors(dest), (
                    f"{page.relative_to(REPO)} links to {target}: {dest.name} has no such heading"
                )


def test_readme_leads():
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) < 12_500, "README.md should stay a short lead; move detail to docs/"
    assert "```mermaid" in readme
    for page in (REPO / "docs").glob("*.md"):
        assert f"docs/{page.name}" in readme, f"README's map of the docs lacks docs/{page.name}"
