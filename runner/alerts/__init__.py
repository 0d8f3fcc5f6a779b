"""Alerts: signed webhooks delivered from the durable outbox, and the watchdog that adds events."""
