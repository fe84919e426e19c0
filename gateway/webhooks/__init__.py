"""Optional signed webhooks (Standard Webhooks): a convenience copy of the events feed.

Import `run_webhooks` from `gateway.webhooks.worker`; this package root imports nothing,
so that `gateway.settings` may use `gateway.webhooks.signing` without an import cycle.
"""
