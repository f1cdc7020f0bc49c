"""Act 3: just-in-time access for the helper, then the audit of what happened."""

from __future__ import annotations

from hoopctl.demo.gateway_act import Stage


def access_act(stage: Stage) -> None:
    pass


def audit_act(stage: Stage) -> None:
    pass
