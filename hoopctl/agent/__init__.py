"""The host agent: watches trees (inotify via watchdog) and process/socket snapshots, decides by policy.

- ``config``: the YAML config, typed, with one-line errors naming the file and the key.
- ``policy``: pure: a finding and its scope -> report | quarantine | terminate | adopt.
- ``watch``: inotify on the configured trees, debounced per path, overflow and watch-limit aware.
- ``actions``: runs decisions through the act/ journal (quarantine, terminate, adopt).
- ``daemon``: the long-running service (sd_notify, signals, periodic passes, status file).
- ``notify``, ``status``, ``logs``: sd_notify, the status file, structured log lines.
"""
