"""The command line and its one HTTP client."""
