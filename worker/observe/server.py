"""The HTTP endpoint: /metrics (Prometheus), /startupz (model warm), /healthz (liveness), /readyz (readiness)."""

from __future__ import annotations

import contextlib
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from worker.config import MetricsSettings
from worker.errors import ConfigError
from worker.observe.health import Health

log = logging.getLogger(__name__)
PROBES = {
    "/startupz": "started",
    "/healthz": "live",
    "/readyz": "ready",
}  # path → the ``Health`` method that answers it


def start_server(
    host: str, port: int, registry: CollectorRegistry, health: Health
) -> ThreadingHTTPServer:
    """Serve on a daemon thread; returns the server (``server_address`` holds the bound port)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in PROBES:
                ok, why = getattr(health, PROBES[path])()
                self._send(
                    200 if ok else 503,
                    f"{'ok' if ok else 'not ok'}: {why}\n".encode(),
                    "text/plain; charset=utf-8",
                )
            else:
                self._send(
                    404,
                    b"not found: try /metrics, /startupz, /healthz or /readyz\n",
                    "text/plain; charset=utf-8",
                )

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(
            self, fmt: str, *args
        ) -> None:  # scrapes every few seconds: keep them out of the logs
            log.debug("http: " + fmt, *args)

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise ConfigError(
            f"invalid setting EMBED_METRICS__PORT: cannot listen on {host}:{port}: {exc.strerror}"
        ) from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    log.info(
        "metrics and health on http://%s:%d/metrics, /startupz, /healthz, /readyz",
        host,
        server.server_address[1],
    )
    return server


@contextlib.contextmanager
def serving(settings: MetricsSettings, registry: CollectorRegistry, health: Health):
    """The endpoint for the length of a ``with`` block, when ``settings.enabled`` (the worker's and the sink's)."""
    server = (
        start_server(settings.host, settings.port, registry, health) if settings.enabled else None
    )
    try:
        yield server
    finally:
        if server is not None:
            server.shutdown()
