"""Helpers for tests that need real things (a throwaway sshd, disposable users); not used at run time."""
