"""Schedules, sensors, alerts and concurrency pools: how the platform runs itself."""
