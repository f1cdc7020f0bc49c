"""Statement policy: classify SQL by what it does (pglast) and judge it against a role's grants.

from hoopctl.gateway.policy import Policy, Role, Verdict, SessionPolicy
policy = Policy.from_config({"reader": {"grants": ["read"]}})
session = policy.session("reader", resource="app-db")
verdict = session.check_query("SELECT 1; DELETE FROM accounts")   # verdict.allowed is False
"""

from hoopctl.gateway.policy.classify import CLASSES, GRANTABLE, Classification, StatementClass, classify
from hoopctl.gateway.policy.policy import REFUSAL_SQLSTATE, Policy, Role, SessionPolicy, Verdict

__all__ = [
    "CLASSES",
    "GRANTABLE",
    "REFUSAL_SQLSTATE",
    "Classification",
    "Policy",
    "Role",
    "SessionPolicy",
    "StatementClass",
    "Verdict",
    "classify",
]
