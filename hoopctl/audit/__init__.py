"""Append-only, hash-chained records; replay; verification."""
