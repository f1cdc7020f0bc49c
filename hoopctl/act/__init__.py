"""Remediation actions with a journal: each is planned, recorded before it runs, and undoable where the world allows.

- ``journal``: the append-only action journal (planned/started → done/failed/refused).
- ``quarantine``: move a file into a root-only vault with a manifest; restore it byte for byte.
- ``terminate``: SIGTERM, wait, SIGKILL a process group or cgroup, after recording what it was.
"""
