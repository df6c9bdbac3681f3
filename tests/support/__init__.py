"""Test support: the process harness, fake peers, audio and site fixtures."""
