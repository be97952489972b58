"""Bad input for runhub.create_project and runhub.add_member: every argument refused with its
SQLSTATE, i18n key and detail, and nothing written; and add_member's actor rules (owners manage
everyone, admins manage members and admins but never an owner, members manage nobody). Hypothesis
checks timezone, currency and locale against independent sources of truth (pg_timezone_names,
runhub.currencies read as Python sets): create_project succeeds iff the value is valid."""
from __future__ import annotations

import re
import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_outcome
from hypothesis import strategies as st

from helpers.db import assert_refused, count_rows, new_project
from runhub_loader.constants import LOCALES

PROPERTY = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

VALID = {"name": "Shop", "timezone": "Europe/Paris", "currency": "EUR", "locale": "en", "industry": None}


def echoed(value):
    """A param as the error's DETAIL echoes it: strings over 200 characters cut, with a marker."""
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + f"\u2026 ({len(value) - 200} more characters)"
    return value


def _counts(conn) -> tuple[int, int]:
    return count_rows(conn, "projects"), count_rows(conn, "project_members")


def create(conn, owner="new", **overrides):
    args = {**VALID, **overrides}
    owner = uuid.uuid4() if owner == "new" else owner
    return conn.execute("SELECT runhub.create_project(%s, %s, %s, %s, %s, %s)",
                        (args["name"], owner, args["timezone"], args["currency"], args["locale"],
                         args["industry"])).fetchone()[0]


def create_refused(conn, sqlstate, key, owner="new", **overrides) -> dict:
    before = _counts(conn)
    with pytest.raises(psycopg.Error) as excinfo:
        create(conn, owner=owner, **overrides)
    detail = assert_refused(excinfo, sqlstate, key)
    assert _counts(conn) == before, "a refused project must write nothing"
    return detail


@pytest.fixture
def existing(conn):
    """One project already there, so 'unchanged' is not trivially 0 == 0."""
    return new_project(conn)


@pytest.fixture(scope="module")
def shared(cluster, cluster_server, template_db):
    """(connection, (project, owner)) in one deployed database for the module's refusal tables:
    cloning a database per case would dominate the run time, and every refusal checks it wrote nothing."""
    with cluster_server.janitor(f"runhub_projects_input_{uuid.uuid4().hex[:10]}", template_db) as database:
        with psycopg.connect(cluster.url(database.dbname), autocommit=True) as c:
            yield c, new_project(c)


def test_valid_project_is_created_with_its_owner(conn, existing):
    owner = uuid.uuid4()
    project = create(conn, owner=owner, name="  Corner Shop  ", timezone="America/St_Johns",
                     currency="JPY", locale="ar", industry="e-commerce_2")
    row = conn.execute("SELECT name, owner_id, timezone, currency, locale, industry FROM runhub.projects"
                       " WHERE id = %s", (project,)).fetchone()
    assert row == ("Corner Shop", owner, "America/St_Johns", "JPY", "ar", "e-commerce_2")
    members = conn.execute("SELECT user_id, role FROM runhub.project_members WHERE project_id = %s",
                           (project,)).fetchall()
    assert members == [(owner, "owner")]


def test_create_project_defaults_locale_and_industry(conn):
    project = conn.execute("SELECT runhub.create_project('Shop', %s, 'UTC', 'USD')", (uuid.uuid4(),)).fetchone()[0]
    assert conn.execute("SELECT locale, industry FROM runhub.projects WHERE id = %s",
                        (project,)).fetchone() == ("en", None)


# -- create_project, argument by argument ---------------------------------------------------------

@pytest.mark.parametrize("name", [None, "", " ", "     ", "\t\n", "\u00a0", "\u200b\ufeff", "x" * 201,
                                  " " + "x" * 201],
                         ids=["null", "empty", "space", "spaces", "tab-newline", "nbsp", "zwsp-bom", "201-chars",
                              "201-chars-padded"])
def test_bad_name(shared, name):
    conn, _ = shared
    detail = create_refused(conn, "PT400", "common.invalidInput", name=name)
    assert detail["field"] == "name"


@pytest.mark.parametrize(("name", "stored"), [
    ("x", "x"), ("x" * 200, "x" * 200), ("  " + "x" * 200 + "  ", "x" * 200), ("Café Ω 店", "Café Ω 店"),
    ("\tCorner  Shop\r\n", "Corner  Shop"), ("\u00a0Shop\u200b", "Shop"), ("\ufeffShop", "Shop"),
], ids=["one", "200", "200-padded", "unicode", "tab-crlf", "nbsp-zwsp", "bom"])
def test_names_that_are_accepted_are_stored_trimmed(conn, name, stored):
    project = create(conn, name=name)
    assert conn.execute("SELECT name FROM runhub.projects WHERE id = %s", (project,)).fetchone()[0] == stored


def test_null_owner(conn, existing):
    detail = create_refused(conn, "PT400", "common.invalidInput", owner=None)
    assert detail["field"] == "owner"


@pytest.mark.parametrize("tz", [
    "Mars/Olympus", "", " ", "UTC+3", "GMT+3", "+03:00", "europe/paris", "EUROPE/PARIS", "Europe/paris",
    "Europe/Paris ", " Europe/Paris", "Europe//Paris", "Europe/Paris/", "../../etc/passwd", "Europe/Par1s",
    "Central European Time", "CEST", "y" * 200, "z" * 201, "x" * 300, None,
    # In pg_timezone_names, but not an Area/Location a shop is in (docs/sql-contract.md, _is_timezone):
    "EST", "CET", "PST8PDT", "GMT", "Universal", "Zulu", "localtime", "posixrules", "Factory",
    "posix/Europe/Paris", "right/Europe/Paris",
])
def test_bad_timezone(shared, tz):
    conn, _ = shared
    detail = create_refused(conn, "PT400", "projects.invalidTimezone", timezone=tz)
    assert detail == {"timezone": echoed(tz)}


@pytest.mark.parametrize("tz", ["UTC", "Europe/Paris", "America/Argentina/Buenos_Aires", "Asia/Kathmandu",
                                "Australia/Lord_Howe", "Pacific/Chatham", "Etc/GMT+3"])
def test_timezones_that_are_accepted(conn, tz):
    project = create(conn, timezone=tz)
    assert conn.execute("SELECT timezone FROM runhub.projects WHERE id = %s", (project,)).fetchone()[0] == tz


@pytest.mark.parametrize("currency", ["usd", "Eur", "XYZ", "", " ", "EU", "EURO", "EUR ", " EUR", "€", "978",
                                      "US$", None])
def test_bad_currency(shared, currency):
    conn, _ = shared
    detail = create_refused(conn, "PT400", "projects.invalidCurrency", currency=currency)
    assert detail == {"currency": currency}


@pytest.mark.parametrize("locale", ["EN", "En", "en-US", "en_US", "it", "", " en", "english", "xx", None])
def test_bad_locale(shared, locale):
    conn, _ = shared
    detail = create_refused(conn, "PT400", "projects.invalidLocale", locale=locale)
    assert detail == {"locale": locale, "supported": ", ".join(LOCALES)}


@pytest.mark.parametrize("industry", ["", " ", "Retail", "1shop", "-shop", "_shop", "re tail", "café", "retail!",
                                      "x" * 41, "retail\n"],
                         ids=["empty", "space", "upper", "digit-first", "dash-first", "underscore-first", "space-in",
                              "accent", "punct", "41-chars", "newline"])
def test_bad_industry(shared, industry):
    conn, _ = shared
    detail = create_refused(conn, "PT400", "common.invalidInput", industry=industry)
    assert detail["field"] == "industry"


@pytest.mark.parametrize("industry", [None, "retail", "e-commerce", "food_and_drink", "b2b", "x" * 40])
def test_industries_that_are_accepted(conn, industry):
    project = create(conn, industry=industry)
    assert conn.execute("SELECT industry FROM runhub.projects WHERE id = %s", (project,)).fetchone()[0] == industry


# -- add_member(project, actor, user, role) ---------------------------------------------------------

def _memberships(conn):
    return conn.execute("SELECT count(*), coalesce(array_agg(project_id::text || user_id::text || role"
                        " ORDER BY project_id, user_id), '{}') FROM runhub.project_members").fetchone()


def member_refused(conn, project, actor, user, role, sqlstate, key) -> dict:
    before = _memberships(conn)
    projects_before = count_rows(conn, "projects")
    with pytest.raises(psycopg.Error) as excinfo:
        conn.execute("SELECT runhub.add_member(%s, %s, %s, %s)", (project, actor, user, role))
    detail = assert_refused(excinfo, sqlstate, key)
    assert _memberships(conn) == before, "a refused add_member must change no membership"
    assert count_rows(conn, "projects") == projects_before
    return detail


def add(conn, project, actor, user, role):
    conn.execute("SELECT runhub.add_member(%s, %s, %s, %s)", (project, actor, user, role))


def roles_of(conn, project) -> dict:
    return dict(conn.execute("SELECT user_id, role FROM runhub.project_members WHERE project_id = %s",
                             (project,)).fetchall())


def test_add_member_null_project(conn, existing):
    _, owner = existing
    detail = member_refused(conn, None, owner, uuid.uuid4(), "member", "PT400", "common.invalidInput")
    assert detail["field"] == "project"


def test_add_member_unknown_project(conn, existing):
    _, owner = existing
    ghost = uuid.uuid4()
    detail = member_refused(conn, ghost, owner, uuid.uuid4(), "member", "PT404", "projects.notFound")
    assert detail == {"projectId": str(ghost)}


def test_add_member_null_actor(conn, existing):
    project, _ = existing
    detail = member_refused(conn, project, None, uuid.uuid4(), "member", "PT400", "common.invalidInput")
    assert detail["field"] == "actor"


@pytest.mark.parametrize("actor", ["stranger", "self", "other project's owner"])
def test_add_member_by_a_non_member_is_not_found(conn, existing, actor):
    project, _ = existing
    _, other_owner = new_project(conn)
    user = uuid.uuid4()
    actor_id = {"stranger": uuid.uuid4(), "self": user, "other project's owner": other_owner}[actor]
    detail = member_refused(conn, project, actor_id, user, "owner", "PT404", "projects.notFound")
    assert detail == {"projectId": str(project)}, "a non-member learns nothing, as for an unknown project"


def test_add_member_null_user(conn, existing):
    project, owner = existing
    detail = member_refused(conn, project, owner, None, "member", "PT400", "common.invalidInput")
    assert detail["field"] == "user"


@pytest.mark.parametrize("role", [None, "", "boss", "Owner", "ADMIN", " member", "member ", "viewer", "superuser"])
def test_add_member_bad_role(shared, role):
    conn, (project, owner) = shared
    detail = member_refused(conn, project, owner, uuid.uuid4(), role, "PT400", "common.invalidInput")
    assert detail["field"] == "role"


@pytest.mark.parametrize("args", [(None, "member"), ("new", "boss"), ("new", None)], ids=["null user", "bad role", "null role"])
@pytest.mark.parametrize("actor, sqlstate, key", [("stranger", "PT404", "projects.notFound"),
                                                   ("member", "PT403", "auth.roleRequired")])
def test_add_member_checks_the_actor_before_the_arguments(conn, existing, args, actor, sqlstate, key):
    project, owner = existing
    member = uuid.uuid4()
    add(conn, project, owner, member, "member")
    user, role = args
    member_refused(conn, project, uuid.uuid4() if actor == "stranger" else member,
                   uuid.uuid4() if user == "new" else user, role, sqlstate, key)


@pytest.mark.parametrize("role", ["member", "admin"])
def test_demoting_the_last_owner_is_refused(conn, existing, role):
    project, owner = existing
    detail = member_refused(conn, project, owner, owner, role, "PT409", "projects.lastOwner")
    assert detail == {"projectId": str(project)}
    assert conn.execute("SELECT role FROM runhub.project_members WHERE project_id = %s AND user_id = %s",
                        (project, owner)).fetchone()[0] == "owner"


def test_add_member_adds_changes_and_replays(conn, existing):
    project, owner = existing
    user = uuid.uuid4()
    add(conn, project, owner, user, "member")
    add(conn, project, owner, user, "member")  # a replay changes nothing
    add(conn, project, owner, user, "owner")
    add(conn, project, owner, owner, "admin")  # another owner remains
    assert roles_of(conn, project) == {owner: "admin", user: "owner"}


@pytest.mark.parametrize("target, role", [("new", "member"), ("new", "admin"), ("new", "owner"),
                                          ("self", "admin"), ("self", "owner"), ("admin", "member"),
                                          ("owner", "member")])
def test_members_manage_nobody(conn, existing, target, role):
    project, owner = existing
    member, admin = uuid.uuid4(), uuid.uuid4()
    add(conn, project, owner, member, "member")
    add(conn, project, owner, admin, "admin")
    user = {"new": uuid.uuid4(), "self": member, "admin": admin, "owner": owner}[target]
    detail = member_refused(conn, project, member, user, role, "PT403", "auth.roleRequired")
    assert detail == {"required": "admin", "role": "member"}


def test_admins_add_and_change_members_and_admins(conn, existing):
    project, owner = existing
    admin, newcomer, other_admin = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    add(conn, project, owner, admin, "admin")
    add(conn, project, admin, newcomer, "member")
    add(conn, project, admin, newcomer, "admin")
    add(conn, project, admin, other_admin, "admin")
    add(conn, project, admin, other_admin, "member")  # an admin demotes another admin
    add(conn, project, admin, admin, "member")         # ... or itself
    assert roles_of(conn, project) == {owner: "owner", admin: "member", newcomer: "admin", other_admin: "member"}


@pytest.mark.parametrize("target, role", [("new", "owner"), ("self", "owner"), ("member", "owner"), ("admin", "owner"),
                                          ("owner", "admin"), ("owner", "member"), ("owner", "owner")])
def test_admins_never_make_an_owner_nor_change_an_owners_role(conn, existing, target, role):
    project, owner = existing
    admin, member, other_admin = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    add(conn, project, owner, admin, "admin")
    add(conn, project, owner, member, "member")
    add(conn, project, owner, other_admin, "admin")
    add(conn, project, owner, uuid.uuid4(), "owner")  # a second owner: demoting the first is not lastOwner
    user = {"new": uuid.uuid4(), "self": admin, "member": member, "admin": other_admin, "owner": owner}[target]
    detail = member_refused(conn, project, admin, user, role, "PT403", "auth.roleRequired")
    assert detail == {"required": "owner", "role": "admin"}


def test_owners_manage_everyone(conn, existing):
    project, owner = existing
    admin, co_owner = uuid.uuid4(), uuid.uuid4()
    add(conn, project, owner, admin, "admin")
    add(conn, project, owner, admin, "owner")     # an owner makes an owner
    add(conn, project, admin, co_owner, "owner")  # ... and so may the new one
    add(conn, project, co_owner, owner, "member")  # an owner demotes another owner
    assert roles_of(conn, project) == {owner: "member", admin: "owner", co_owner: "owner"}
    member_refused(conn, project, owner, owner, "owner", "PT403", "auth.roleRequired")  # the demoted cannot climb back


# -- properties: success iff valid, against independent truth ----------------------------------

_text = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)


_TRUTH: dict[str, list[str]] = {}  # the server's zone names and currency codes, read once


def _is_place_zone(tz: str, names: set[str]) -> bool:
    """The contract: a name in pg_timezone_names that is UTC or an IANA Area/Location (not posix/, right/)."""
    return tz in names and (tz == "UTC" or (re.match(r"[A-Za-z]+/", tz) is not None
                                            and not tz.startswith(("posix/", "right/"))))


def _timezone_names(conn) -> list[str]:
    if "tz" not in _TRUTH:
        _TRUTH["tz"] = [r[0] for r in conn.execute("SELECT name FROM pg_timezone_names ORDER BY name").fetchall()]
    return _TRUTH["tz"]


def _currency_codes(conn) -> list[str]:
    if "currency" not in _TRUTH:
        _TRUTH["currency"] = [r[0] for r in conn.execute("SELECT code FROM runhub.currencies ORDER BY code").fetchall()]
    return _TRUTH["currency"]


def _mutations(names: list[str]):
    """Real names, and real names slightly wrong: case, padding, truncation, a replaced separator."""
    real = st.sampled_from(names)
    return st.one_of(
        real,
        real.map(str.lower), real.map(str.upper), real.map(lambda s: s + " "), real.map(lambda s: " " + s),
        real.map(lambda s: s[:-1]), real.map(lambda s: s.replace("/", "_")), real.map(lambda s: s.replace("_", " ")),
    )


def _attempt(conn, **overrides):
    """(project id or None, the refusal's key or None); a refusal must be PTxxx and write nothing."""
    before = _counts(conn)
    try:
        project = create(conn, **overrides)
        note_outcome("accepted")
        return project, None
    except psycopg.Error as err:
        assert err.sqlstate and err.sqlstate.startswith("PT"), (err.sqlstate, str(err), overrides)
        note_outcome(f"refused: {err.diag.message_primary}")
        assert _counts(conn) == before
        return None, err.diag.message_primary


@PROPERTY
@given(data=st.data())
def test_timezone_accepted_iff_a_place_in_pg_timezone_names(conn, data):
    names = _timezone_names(conn)
    tz = data.draw(_text | _mutations(names), label="timezone")
    project, key = _attempt(conn, timezone=tz)
    if _is_place_zone(tz, set(names)):
        assert project is not None and key is None, tz
        stored = conn.execute("SELECT timezone FROM runhub.projects WHERE id = %s", (project,)).fetchone()[0]
        assert stored == tz
        # And the stored zone really is usable by the server.
        conn.execute("SELECT now() AT TIME ZONE %s", (stored,))
    else:
        assert key == "projects.invalidTimezone", (tz, key)


@PROPERTY
@given(data=st.data())
def test_currency_accepted_iff_in_currencies(conn, data):
    codes = _currency_codes(conn)
    currency = data.draw(_text | _mutations(codes) | st.from_regex(r"[A-Z]{3}", fullmatch=True)
                         | st.from_regex(r"[A-Za-z]{2,4}\s?", fullmatch=True), label="currency")
    project, key = _attempt(conn, currency=currency)
    if currency in set(codes):
        assert project is not None and key is None, currency
        assert conn.execute("SELECT currency FROM runhub.projects WHERE id = %s",
                            (project,)).fetchone()[0] == currency
    else:
        assert key == "projects.invalidCurrency", (currency, key)


@PROPERTY
@given(locale=_text | _mutations(sorted(LOCALES)) | st.from_regex(r"[a-z]{2}", fullmatch=True))
def test_locale_accepted_iff_supported(conn, locale):
    project, key = _attempt(conn, locale=locale)
    if locale in LOCALES:
        assert project is not None and key is None, locale
    else:
        assert key == "projects.invalidLocale", (locale, key)


# -- senderName and replyTo: how a shop's mail says who sent it ------------------------------------

def _settings(conn, project, owner, settings: dict):
    from psycopg.types.json import Jsonb

    return conn.execute("SELECT runhub.update_project_settings(%s, %s, %s)", (project, owner, Jsonb(settings))).fetchone()[0]


@pytest.mark.parametrize(("given_", "stored"), [
    ("Café Olé", "Café Olé"), ("  Two\n lines\tjoined ", "Two lines joined"), ("x" * 100, "x" * 100),
    ("line\u2028sep\u3000arated", "line sep arated"),
    ('"Quoted" <not@an.address>', '"Quoted" <not@an.address>'),  # a name, written as encoded words
])
def test_a_sender_name_is_stored_on_one_line(conn, given_, stored):
    project, owner = new_project(conn)
    assert _settings(conn, project, owner, {"senderName": given_})["senderName"] == stored
    assert "senderName" not in _settings(conn, project, owner, {"senderName": None}), "null: the project's name again"


@pytest.mark.parametrize("bad", ["", "   ", "x" * 101, "bell\x07", "esc\x1b", "csi\x9b", 7, ["x"]])
def test_a_bad_sender_name_is_refused_and_changes_nothing(conn, bad):
    project, owner = new_project(conn)
    with pytest.raises(psycopg.Error) as excinfo:
        _settings(conn, project, owner, {"senderName": bad, "shopUrl": "https://shop.example"})
    assert assert_refused(excinfo, "PT400", "common.invalidInput")["field"] == "senderName"
    assert conn.execute("SELECT settings FROM runhub.projects WHERE id = %s", (project,)).fetchone()[0] == {}


def test_reply_to_is_an_address_by_the_one_rule(conn):
    project, owner = new_project(conn)
    assert _settings(conn, project, owner, {"replyTo": " Owner@Bücher.DE "})["replyTo"] == "owner@bücher.de"
    for bad in ["owner", "İnfo@example.com", "a" * 250 + "@example.com", "Owner <owner@example.com>", 5]:
        with pytest.raises(psycopg.Error) as excinfo:
            _settings(conn, project, owner, {"replyTo": bad})
        assert assert_refused(excinfo, "PT400", "common.invalidInput")["field"] == "replyTo", bad
    assert "replyTo" not in _settings(conn, project, owner, {"replyTo": None})


# -- a caller's id: create_project safe to retry ---------------------------------------------------

def _create(conn, owner, project_id, name="Shop"):
    return conn.execute("SELECT runhub.create_project(name => %s, owner => %s, timezone => 'UTC', currency => 'EUR',"
                        " id => %s)", (name, owner, project_id)).fetchone()[0]


def test_a_retry_with_the_callers_id_answers_the_first_project(conn):
    owner, project_id = uuid.uuid4(), uuid.uuid4()
    assert _create(conn, owner, project_id) == project_id
    assert _create(conn, owner, project_id, name="Another name") == project_id, "first write wins"
    assert conn.execute("SELECT name FROM runhub.projects WHERE id = %s", (project_id,)).fetchone()[0] == "Shop"
    assert conn.execute("SELECT count(*) FROM runhub.project_members WHERE project_id = %s",
                        (project_id,)).fetchone()[0] == 1


def test_an_id_another_owner_has_is_refused_and_nothing_is_written(conn):
    owner, project_id = uuid.uuid4(), uuid.uuid4()
    _create(conn, owner, project_id)
    before = count_rows(conn, "project_members")
    with pytest.raises(psycopg.Error) as excinfo:
        _create(conn, uuid.uuid4(), project_id)
    assert assert_refused(excinfo, "PT409", "projects.idInUse") == {"projectId": str(project_id)}
    assert count_rows(conn, "project_members") == before


def test_concurrent_calls_with_one_id_make_one_project(conn, open_sessions):
    """Eight sessions at once, one id: one project, one owner row, every call answered with it."""
    from helpers.workflows import race

    owner, project_id = uuid.uuid4(), uuid.uuid4()
    answers = race(open_sessions(8), lambda i, session: _create(session, owner, project_id))
    assert [a[1] for a in answers] == [project_id] * 8
    assert conn.execute("SELECT count(*) FROM runhub.project_members WHERE project_id = %s",
                        (project_id,)).fetchone()[0] == 1
