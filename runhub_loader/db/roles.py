"""The LOGIN roles of runhub's components (`runhub login-role`): one login per component, granted
that component's runhub role and no other, with the component's timeouts in the database."""
from __future__ import annotations

from psycopg import sql

from . import queries

# What each component's login may spend: a statement (the sender's longest is the digest job over
# every due project, and the execution of a 1,000-recipient run) and an idle transaction.
LOGIN_TIMEOUTS = {"app": ("30s", "60s"), "ingest": ("5s", "30s"), "sender": ("10min", "60s"),
                  "reader": ("30s", "60s"), "analyst": ("5min", "60s")}  # the analyst's: pooled over every shop


class NotAComponentLogin(Exception):
    """The name is a superuser's or one of runhub's own roles: never turned into a component login."""


def apply_login_role(conn, name: str, component: str, password: str | None) -> None:
    """Create or update the login `name` for `component` (app, ingest, sender, reader, analyst) in
    the database `conn` is connected to, in one transaction."""
    statement, idle = LOGIN_TIMEOUTS[component]
    role = sql.Identifier(name)
    with conn.transaction():
        existing = conn.execute(queries.LOGIN_ROLE_STATE,
                                (["runhub_owner"] + [f"runhub_{c}" for c in LOGIN_TIMEOUTS], name)).fetchone()
        if existing and (existing[0] or existing[1]):
            raise NotAComponentLogin(f"{name} is a superuser or one of runhub's own roles: not a component login")
        if not existing:
            conn.execute(queries.CREATE_LOGIN_ROLE.format(role))
        if password:
            conn.execute(queries.SET_LOGIN_PASSWORD.format(role, sql.Literal(password)))
        for other in sorted(LOGIN_TIMEOUTS):
            if other != component and conn.execute(queries.IS_ROLE_MEMBER, (name, f"runhub_{other}")).fetchone()[0]:
                conn.execute(queries.REVOKE_ROLE.format(sql.Identifier(f"runhub_{other}"), role))
        conn.execute(queries.GRANT_ROLE.format(sql.Identifier(f"runhub_{component}"), role))
        database = sql.Identifier(conn.info.dbname)
        for setting, value in (("statement_timeout", statement), ("idle_in_transaction_session_timeout", idle)):
            conn.execute(queries.SET_ROLE_SETTING_IN_DATABASE.format(
                role, database, sql.Identifier(setting), sql.Literal(value)))
