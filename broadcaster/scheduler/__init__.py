"""Scheduled announcements; the only package that imports APScheduler."""
