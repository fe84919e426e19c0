"""Logs without personal data, and Prometheus metrics."""
