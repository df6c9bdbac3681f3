"""Accounts, scopes and roles: who may do what, where (pure policy beside its storage)."""
