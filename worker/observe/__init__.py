"""Observability: Prometheus metrics, health and readiness over HTTP, structured logs."""
