"""``python3 -m worker.observe.probe /healthz --port 9400 --processes N``: one probe for a pod of N processes.

Kubernetes probes one port per container, and with ``EMBED_PROCESSES=N`` process i answers on
port + i: an HTTP probe would watch process 0 alone, and a wedged process 3 would keep its
partitions. This asks each process in turn and exits 0 only when every one answers 200, else 1
with the first failure on stderr (the kubelet records it in the pod's events). It imports only
the standard library: it runs every few seconds beside the worker.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence


def check(path: str, host: str, port: int, processes: int, timeout_s: float) -> tuple[bool, str]:
    """Ask ``path`` of every process; the first that does not answer 200 fails the probe."""
    for i in range(processes):
        url = f"http://{host}:{port + i}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                status, body = response.status, response.read(200)
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read(200)
        except (OSError, ValueError) as exc:
            return False, f"process {i} ({url}): {exc}"
        if status != 200:
            return False, f"process {i} ({url}): {status} {body.decode(errors='replace').strip()}"
    return True, f"{processes} processes answer 200 on {path}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m worker.observe.probe", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("path", choices=["/startupz", "/healthz", "/readyz"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=9400, help="process 0's port (EMBED_METRICS__PORT)"
    )
    parser.add_argument("--processes", type=int, default=1, help="EMBED_PROCESSES")
    parser.add_argument("--timeout-s", type=float, default=3.0, help="per process")
    args = parser.parse_args(argv)
    ok, why = check(args.path, args.host, args.port, max(1, args.processes), args.timeout_s)
    print(why, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
