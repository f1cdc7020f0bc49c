"""Identities, tokens, grants and just-in-time approvals."""
