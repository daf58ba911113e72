"""How the platform runs itself: automation conditions, schedules, sensors and alerts."""
