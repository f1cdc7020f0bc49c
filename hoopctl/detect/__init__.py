"""Pure classification: bytes -> credential findings; snapshots -> tunnel and orphan findings. No I/O."""

from hoopctl.detect.engine import Detector
from hoopctl.detect.match import Match
from hoopctl.detect.rules import Rule, RuleError, load_rules

__all__ = ["Detector", "Match", "Rule", "RuleError", "load_rules"]
