"""A session's prepared statements: EXECUTE is judged by what the name was prepared to do."""

from __future__ import annotations

import pytest

from hoopctl.gateway.policy import Policy, Role

ROLES = {"reader": {"grants": ["read"]}, "writer": {"grants": ["read", "write"]}}


@pytest.fixture
def policy() -> Policy:
    return Policy.from_config(ROLES)


def test_execute_of_a_prepared_read_is_allowed_in_later_messages(policy: Policy) -> None:
    session = policy.session("reader")
    assert session.check_query("PREPARE r(int) AS SELECT email FROM accounts WHERE id = $1").allowed
    verdict = session.check_query("EXECUTE r(1)")
    assert verdict.allowed and verdict.classes == frozenset({"read"})
    assert session.check_query("EXPLAIN ANALYZE EXECUTE r(2)").allowed


def test_execute_takes_the_classes_of_what_it_runs(policy: Policy) -> None:
    session = policy.session("writer")
    assert session.check_query("PREPARE w AS DELETE FROM accounts").allowed
    assert session.check_query("EXECUTE w").classes == frozenset({"write"})


def test_execute_arguments_are_judged_too(policy: Policy) -> None:
    session = policy.session("reader")
    session.check_query("PREPARE r(text) AS SELECT $1")
    assert session.check_query("EXECUTE r(pg_read_file('/etc/passwd'))").rule == "file-not-granted"


def test_execute_of_an_unknown_name_is_refused(policy: Policy) -> None:
    session = policy.session("writer")
    verdict = session.check_query("EXECUTE never")
    assert (verdict.allowed, verdict.rule) == (False, "unknown-prepared-statement:never")
    other = policy.session("writer")
    other.check_query("PREPARE mine AS SELECT 1")
    assert not session.check_query("EXECUTE mine").allowed, "names are per session"


def test_a_refused_string_prepares_nothing(policy: Policy) -> None:
    session = policy.session("reader")
    assert not session.check_query("PREPARE p AS SELECT 1; DELETE FROM accounts").allowed
    assert session.check_query("EXECUTE p").rule == "unknown-prepared-statement:p"


def test_grant_expiry_applies_to_statements_prepared_before(policy: Policy) -> None:
    session = policy.session("reader", frozenset({"write"}))
    assert session.check_query("PREPARE w AS UPDATE accounts SET balance = 0").allowed
    assert session.check_query("EXECUTE w").allowed
    session.set_extra_grants(frozenset())  # the just-in-time grant expired
    assert session.check_query("EXECUTE w").rule == "write-not-granted"


def test_re_preparing_a_name_cannot_launder_it(policy: Policy) -> None:
    # If DEALLOCATE failed on the server (say, in an aborted transaction), the server still holds
    # the write under that name and the new PREPARE fails there: the name must stay a write.
    session = policy.session("reader", frozenset({"write"}))
    session.check_query("PREPARE w AS DELETE FROM accounts")
    session.set_extra_grants(frozenset())
    assert session.check_query("DEALLOCATE w").allowed
    assert session.check_query("EXECUTE w").rule == "unknown-prepared-statement:w"
    assert session.check_query("PREPARE w AS SELECT 1").allowed
    assert session.check_query("EXECUTE w").rule == "write-not-granted"


def test_deallocate_and_discard_forget_names(policy: Policy) -> None:
    session = policy.session("writer")
    session.check_query("PREPARE a AS SELECT 1; PREPARE b AS SELECT 2")
    assert session.check_query("DEALLOCATE a; EXECUTE b").allowed
    assert not session.check_query("EXECUTE a").allowed
    assert session.check_query("DEALLOCATE ALL").allowed
    assert not session.check_query("EXECUTE b").allowed
    admin = Policy({"admin": Role("admin", frozenset({"read", "role_switch"}))}).session("admin")
    admin.check_query("PREPARE c AS SELECT 1")
    assert admin.check_query("DISCARD ALL").allowed
    assert not admin.check_query("EXECUTE c").allowed


def test_prepare_and_execute_in_one_string_are_judged_in_order(policy: Policy) -> None:
    session = policy.session("reader")
    assert session.check_query("PREPARE q AS SELECT 1; EXECUTE q; DEALLOCATE q").allowed
    assert not session.check_query("EXECUTE q").allowed
    assert not session.check_query("DEALLOCATE q2; EXECUTE q2").allowed


def test_protocol_parse_with_a_name_is_executable_by_sql(policy: Policy) -> None:
    session = policy.session("reader", frozenset({"write"}))
    assert session.check_parse("DELETE FROM accounts WHERE id = $1", name="s1").allowed
    assert session.check_execute("s1").allowed
    assert session.check_query("EXECUTE s1(1)").allowed
    session.set_extra_grants(frozenset())
    assert session.check_execute("s1").rule == "write-not-granted"
    assert session.check_query("EXECUTE s1(1)").rule == "write-not-granted"
    session.close_statement("s1")
    assert session.check_execute("s1").rule == "unknown-prepared-statement:s1"


def test_parse_refuses_several_statements_and_junk(policy: Policy) -> None:
    session = policy.session("writer")
    assert session.check_parse("SELECT 1; SELECT 2").rule == "multiple-statements-in-parse"
    assert session.check_parse("SELEC").rule == "unparsable"
    assert session.check_parse("SELECT $1::int").allowed
    assert session.check_parse("").allowed
    assert not policy.session("reader").check_parse("INSERT INTO accounts VALUES ($1)").allowed


def test_unknown_functions_pass_only_with_the_unknown_grant() -> None:
    policy = Policy.from_config(
        {"app": {"grants": ["read", "write", "unknown"]}, "reader": {"grants": ["read"]}}
    )
    assert policy.session("app").check_query("SELECT bump_balance(1, 2)").allowed
    verdict = policy.session("reader").check_query("SELECT bump_balance(1, 2)")
    assert verdict.rule == "unknown-function:bump_balance"
    assert "--role app" in verdict.message
    app = policy.session("app")
    app.check_query("PREPARE u AS SELECT bump_balance(1, 2)")
    app.set_extra_grants(frozenset())
    assert app.check_query("EXECUTE u").allowed
    reader = policy.session("reader", frozenset({"unknown"}))
    reader.check_query("PREPARE u AS SELECT bump_balance(1, 2)")
    reader.set_extra_grants(frozenset())
    assert not reader.check_query("EXECUTE u").allowed


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        (["reader"], "roles: expected a mapping"),
        ({"reader": ["read"]}, "roles.reader: expected a mapping with a grants list"),
        ({"reader": {}}, "roles.reader.grants: missing"),
        ({"reader": {"grants": "read"}}, "roles.reader.grants: expected a list"),
        ({"reader": {"grants": ["read", "wirte"]}}, "roles.reader.grants[1]: unknown class 'wirte'"),
        ({"": {"grants": ["read"]}}, "roles.: a role name must be a non-empty string"),
    ],
)
def test_bad_role_config_names_the_key(roles: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Policy.from_config(roles)


def test_config_grants_are_plain_sets() -> None:
    policy = Policy.from_config(
        {"admin": {"grants": ["all"], "mode": "hold"}, "reader": {"grants": ["read"]}}
    )
    assert "program" in policy.roles["admin"].grants and "unknown" in policy.roles["admin"].grants
    assert policy.roles["reader"] == Role(name="reader", grants=frozenset({"read"}))
    assert Policy.from_roles({"reader": ["read"]}).roles == {"reader": Role("reader", frozenset({"read"}))}


def test_within_caps_the_role_but_not_just_in_time_grants() -> None:
    policy = Policy.from_config({"writer": {"grants": ["read", "write"]}})
    helper = policy.session("writer", within=frozenset({"read"}))
    assert helper.check_query("SELECT 1").allowed
    assert helper.check_query("DELETE FROM accounts").rule == "write-not-granted"
    assert helper.check_query("BEGIN; COMMIT").allowed, "session statements stay granted"
    approved = policy.session("writer", frozenset({"write"}), within=frozenset({"read"}))
    assert approved.check_query("DELETE FROM accounts").allowed


def test_a_reloaded_policy_keeps_the_session_prepared_names() -> None:
    before = Policy.from_config({"app": {"grants": ["read", "write"]}})
    session = before.session("app")
    session.check_query("PREPARE w AS DELETE FROM accounts")
    after = Policy.from_config({"app": {"grants": ["read"]}})  # SIGHUP took write away
    moved = after.session("app")
    moved.inherit(session)
    assert moved.check_query("EXECUTE w").rule == "write-not-granted"
    assert moved.check_query("SELECT 1").allowed
    assert after.session("app").check_query("EXECUTE w").rule == "unknown-prepared-statement:w"


def test_a_reload_keeps_the_session_just_in_time_grants() -> None:
    before = Policy.from_config({"app": {"grants": ["read"]}})
    session = before.session("app")
    session.set_extra_grants(frozenset({"write"}))  # an approved request
    moved = Policy.from_config({"app": {"grants": ["read"]}}).session("app")
    moved.inherit(session)
    assert moved.check_query("DELETE FROM accounts").allowed
