"""redact_dsn masks a password in every form a DSN can carry it: URL userinfo, a query
parameter, a key=value pair (quoted or not)."""
from __future__ import annotations

import pytest

from matchcore.gateway.logs import dsn_has_password, redact_dsn

SECRET = "s3cr:t@x"


@pytest.mark.parametrize("dsn", [
    "postgresql://trader:s3cr%3At%40x@db.example:5432/venue",
    "postgres://trader:s3cr:t@x@db/venue",
    "postgresql://trader@db/venue?password=s3cr:t@x",
    "postgresql://db/venue?sslmode=require&password=s3cr:t@x&application_name=a",
    "postgresql://db/venue?PASSWORD=s3cr%3At%40x",
    "host=db dbname=venue user=trader password=s3cr:t@x",
    "host=db password = 's3cr:t@x' user=trader",
    "host=db password='s3cr:t@x \\' more' user=trader",
])
def test_every_password_form_is_masked(dsn):
    redacted = redact_dsn(dsn)
    assert "s3cr" not in redacted and "***" in redacted
    assert "db" in redacted
    assert dsn_has_password(dsn)


def test_a_dsn_without_password_is_kept():
    for dsn in ("postgresql://trader@db/venue?sslmode=require", "host=db user=trader", "postgresql:///venue"):
        assert redact_dsn(dsn) == dsn and not dsn_has_password(dsn)
    assert redact_dsn("postgresql://trader:pw@db/venue") == "postgresql://trader:***@db/venue"
