"""Durable state under the data directory: SQLite through sqlite-utils, the journal."""
