"""The speaker software: endpoint, sound card, outputs, and the whole-site simulator."""
