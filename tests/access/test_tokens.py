import time

import pytest

from hoopctl.access import tokens
from hoopctl.access.tokens import AuthError, TokenAuthority, TokenError, attenuate, split_token

KEY = bytes(range(32))
GRANTS = {"admin": {"read", "write", "ddl"}, "writer": {"read", "write"}, "reader": {"read"}}


def authority(**kw):
    return TokenAuthority(KEY, role_contains=lambda p, c: GRANTS[c] <= GRANTS[p], **kw)


def test_issued_token_authenticates_as_whole_token_and_as_scram_pair():
    auth = authority()
    token = auth.issue("ci-job", "appdb", "writer", ttl_s=900)
    cred = auth.authenticate("anyone", token, resource="appdb", client_ip="127.0.0.1")
    assert (cred.identity, cred.role, cred.resource) == ("ci-job", "writer", "appdb")
    user, sig = split_token(token)
    assert auth.scram_password(user) == sig
    assert auth.authenticate(user, sig, resource="appdb", client_ip="127.0.0.1").role == "writer"


def test_tampered_caveat_is_refused():
    auth = authority()
    token = auth.issue("ci-job", "appdb", "reader", ttl_s=900)
    user, sig = split_token(token)
    forged = tokens.TokenBody.decode(user)
    forged = tokens.TokenBody(forged.identifier, tuple(c.replace("reader", "admin") for c in forged.caveats))
    with pytest.raises(AuthError, match="bad signature"):
        auth.authenticate(forged.encode(), sig, resource="appdb", client_ip="127.0.0.1")


def test_other_key_wrong_resource_and_expiry_are_refused():
    token = authority().issue("ci-job", "appdb", "reader", ttl_s=900)
    with pytest.raises(AuthError):
        TokenAuthority(b"x" * 32).authenticate("u", token, resource="appdb", client_ip="127.0.0.1")
    with pytest.raises(AuthError, match="not 'otherdb'"):
        authority().authenticate("u", token, resource="otherdb", client_ip="127.0.0.1")
    later = authority(clock=lambda: time.time() + 901)
    with pytest.raises(AuthError, match="expired"):
        later.authenticate("u", token, resource="appdb", client_ip="127.0.0.1")


def test_attenuated_child_is_narrower_and_carries_the_chain():
    auth = authority()
    parent = auth.issue("ci-job", "appdb", "writer", ttl_s=900)
    child = attenuate(parent, identity="helper", role="reader", ttl_s=60, client_cidr="127.0.0.0/8")
    cred = auth.authenticate("u", child, resource="appdb", client_ip="127.0.0.1")
    assert cred.role == "reader" and cred.chain == ("ci-job", "helper")
    assert cred.expires_at <= time.time() + 61
    with pytest.raises(AuthError, match="not valid from"):
        auth.authenticate("u", child, resource="appdb", client_ip="10.1.2.3")


def test_child_cannot_widen_role_or_lifetime():
    auth = authority()
    parent = auth.issue("ci-job", "appdb", "reader", ttl_s=60)
    wider = attenuate(parent, role="admin")
    with pytest.raises(AuthError, match="widens role"):
        auth.authenticate("u", wider, resource="appdb", client_ip="127.0.0.1")
    longer = attenuate(parent, ttl_s=86400)
    assert (
        auth.authenticate("u", longer, resource="appdb", client_ip="127.0.0.1").expires_at <= time.time() + 61
    )


def test_revoking_a_parent_revokes_children():
    revoked: set[str] = set()
    auth = authority(is_revoked=lambda ids: bool(revoked & set(ids)))
    parent = auth.issue("ci-job", "appdb", "writer", ttl_s=900)
    child = attenuate(parent, role="reader")
    parent_id = auth.authenticate("u", parent, resource="appdb", client_ip="127.0.0.1").token_id
    revoked.add(parent_id)
    with pytest.raises(AuthError, match="revoked"):
        auth.authenticate("u", child, resource="appdb", client_ip="127.0.0.1")


@pytest.mark.parametrize("junk", ["", "hoop1.", "hoop1.!!!.00", "nottoken", "hoop1.e30.abc"])
def test_junk_is_a_clean_error(junk):
    with pytest.raises(AuthError):
        authority().authenticate(junk, junk, resource="appdb", client_ip="127.0.0.1")
    assert authority().scram_password(junk) is None or junk.startswith("hoop1.")


def test_key_file_must_be_private(tmp_path):
    path = tmp_path / "token.key"
    tokens.generate_key(path)
    assert len(tokens.load_key(path)) == 32
    path.chmod(0o644)
    with pytest.raises(TokenError, match="chmod 600"):
        tokens.load_key(path)
    with pytest.raises(FileExistsError):
        tokens.generate_key(path)


def test_principal_is_the_identity_chain_and_grants_need_a_name_at_every_narrowing():
    auth = authority()
    job = auth.issue("ci-job", "appdb", "writer", ttl_s=900)

    def cred(token):
        return auth.authenticate("", token, resource="appdb", client_ip="127.0.0.1")

    helper = attenuate(job, identity="helper")  # keeps the job's role, stated again
    assert (cred(helper).principal, cred(helper).narrowed_in_place) == ("ci-job>helper", False)
    assert cred(attenuate(job, identity="helper", role="reader")).narrowed_in_place is False
    assert cred(attenuate(job, ttl_s=60)).narrowed_in_place is False  # the job, for less time
    for narrowed in (attenuate(job, role="reader"), attenuate(attenuate(job, role="reader"), identity="x")):
        assert cred(narrowed).narrowed_in_place is True
    body = tokens.TokenBody.decode(split_token(attenuate(helper, role="reader"))[0])
    assert tokens.principal_of(body.fields()) == ("ci-job>helper", False)
    with pytest.raises(TokenError):
        attenuate(job, identity="a>b")


def test_inspect_names_the_principal():
    from click.testing import CliRunner

    from hoopctl.cli import main

    job = authority().issue("ci-job", "appdb", "writer", ttl_s=900)
    shown = CliRunner().invoke(main, ["token", "inspect", attenuate(job, identity="helper")])
    assert "principal ci-job>helper (just-in-time grants and requests are for it)" in shown.output
    shown = CliRunner().invoke(main, ["token", "inspect", attenuate(job, role="reader")])
    assert "principal ci-job (narrowed in place: no just-in-time grants)" in shown.output
