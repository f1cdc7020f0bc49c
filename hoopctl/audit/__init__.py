"""Append-only, hash-chained session recordings; verification; replay.

- ``chain``    one record: sealing, parsing, the per-file chain check.
- ``recorder`` writing (the gateway's hot path): ``Recorder``, ``SessionRecording``.
- ``reader``   reading: list, load, verify against the ledger, replay.
- ``layout``   where files live; ``ids`` session ids; ``bench`` the microbenchmark.

On disk (``DIR`` is the gateway's recordings directory, mode 0700, files 0600):
``DIR/sessions/<id>.jsonl`` holds one session (start, stmt, result, event, end
records), ``DIR/ledger.jsonl`` one chain over all session opens and seals plus
recorder starts/stops and session-less events (access requests, approvals). The
seal of a session names its record count and last hash, so deleting or cutting a
session file is seen. Guarantees and limits are in ``reader``'s docstring.

For the access-control work: ``SessionRecording.event(kind, **fields)`` records
a request, an approval, a grant's expiry inside a session; ``Recorder.event``
records one in the ledger and returns its hash, which the session event can cite
(``ledger_ref=...``) to link the two. ``open_session(chain=...)`` takes the whole
token chain, job first, as strings or small JSON objects.
"""
