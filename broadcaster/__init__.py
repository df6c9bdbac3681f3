"""broadcaster: an IP broadcast-speaker control system."""
