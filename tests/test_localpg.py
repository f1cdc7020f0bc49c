import pytest


@pytest.mark.postgres
def test_local_postgres_answers_over_socket(postgres):
    assert postgres.psql("select 40 + 2") == "42"
