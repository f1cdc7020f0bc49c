"""Act 4: the host agent."""

from __future__ import annotations

from hoopctl.demo.gateway_act import Stage


def agent_act(stage: Stage) -> None:
    pass
