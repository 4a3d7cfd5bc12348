"""Render the Helm chart with a set of values and check what comes out (runs in .venv-ops).

Usage: render_chart.py CHART_DIR [-f VALUES.yaml ...] [--api-versions keda.sh/v1alpha1,...] [--kube-version 1.31.0]

Runs Helm's own `helm lint --strict` and `helm template` (the binary scripts/fetch_helm.py puts
beside this Python), then validates every rendered object of a built-in kind against the Kubernetes
OpenAPI schemas of --kube-version with kubernetes-validate (strict: an unknown field is an error).
Custom resources (KEDA, the Prometheus operator) have no schema there; the tests check them.
Prints one JSON object: {"error": Helm's message or null, "lint": [...], "objects": [...], "invalid": [...]}.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

HELM = str(Path(sys.executable).parent / "helm")
CUSTOM_GROUPS = ("keda.sh/", "monitoring.coreos.com/")


class StrictLoader(yaml.SafeLoader):
    """YAML that refuses a key twice in one mapping (the API server would keep one silently)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=True) for k, _ in node.value]
        twice = sorted({str(k) for k in keys if keys.count(k) > 1})
        if twice:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate keys {twice}", node.start_mark
            )
        return super().construct_mapping(node, deep)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("chart")
    parser.add_argument("-f", "--values", action="append", default=[])
    parser.add_argument("--api-versions", default="")
    parser.add_argument("--kube-version", default="1.31.0")
    parser.add_argument("--release", default="embed")
    args = parser.parse_args(argv)
    values = [arg for path in args.values for arg in ("-f", path)]
    caps = ["--api-versions", args.api_versions] if args.api_versions else []
    lint = subprocess.run(
        [HELM, "lint", "--strict", args.chart, *values, "--kube-version", args.kube_version],
        capture_output=True,
        text=True,
    )
    lint_problems = [
        line
        for line in lint.stdout.splitlines() + lint.stderr.splitlines()
        if line.startswith(("[WARNING]", "[ERROR]"))
    ]
    proc = subprocess.run(
        [
            HELM,
            "template",
            args.release,
            args.chart,
            "--namespace",
            "embed",
            "--kube-version",
            args.kube_version,
            *caps,
            *values,
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        print(
            json.dumps(
                {"error": proc.stderr.strip(), "lint": lint_problems, "objects": [], "invalid": []}
            )
        )
        return 0
    try:
        objects = [doc for doc in yaml.load_all(proc.stdout, Loader=StrictLoader) if doc]
    except yaml.YAMLError as exc:
        print(
            json.dumps(
                {
                    "error": f"rendered YAML: {exc}",
                    "lint": lint_problems,
                    "objects": [],
                    "invalid": [],
                }
            )
        )
        return 0
    invalid = []
    for obj in objects:
        if obj.get("apiVersion", "").startswith(CUSTOM_GROUPS):
            continue
        try:
            kubernetes_validate.validate(obj, args.kube_version, strict=True)
        except (
            kubernetes_validate.ValidationError,
            kubernetes_validate.SchemaNotFoundError,
            kubernetes_validate.InvalidSchemaError,
        ) as exc:
            invalid.append(
                f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}: {getattr(exc, 'message', exc)}"
            )
    print(
        json.dumps({"error": None, "lint": lint_problems, "objects": objects, "invalid": invalid})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
