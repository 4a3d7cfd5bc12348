"""Lint the Helm chart with a set of values, through the Helm library in helm-sdkpy (Python >= 3.12).

Usage: helm_lint.py CHART_DIR [VALUES.yaml ...] [--set-json '{"a": {"b": 1}}']
Values files and the JSON are deep-merged over the chart's values.yaml, in order, into a copy of the
chart (the library's lint takes no values of its own). Prints a JSON summary on stdout. Templates that
call `fail` are reported by Helm on stderr ("funcMap fail message=..."), not as lint errors: the
caller reads stderr for those.
"""

import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

import helm_sdkpy
import yaml

SEVERITY = {0: "unknown", 1: "info", 2: "warning", 3: "error"}


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def main(argv: list[str]) -> int:
    chart, rest = Path(argv[0]), argv[1:]
    overlays = []
    while rest:
        arg = rest.pop(0)
        overlays.append(json.loads(rest.pop(0)) if arg == "--set-json" else yaml.safe_load(Path(arg).read_text()))
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / chart.name
        shutil.copytree(chart, copy)
        values = yaml.safe_load((copy / "values.yaml").read_text())
        for overlay in overlays:
            values = merge(values, overlay or {})
        (copy / "values.yaml").write_text(yaml.safe_dump(values))
        result = asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(str(copy)))
    messages = [{"severity": SEVERITY.get(m["Severity"], "unknown"), "path": m["Path"]} for m in result.get("Messages") or []]
    print(json.dumps({"charts": result.get("TotalChartsLinted"), "messages": messages}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
