"""Speaker drivers: one per speaker family, each a small protocol with declared capabilities."""
