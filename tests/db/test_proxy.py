"""runhub through a proxy database over four partitions on two clusters (PL/Proxy): the same API,
the same answers and errors as one database, routed by each call's project."""
from __future__ import annotations

import json
import re
import uuid

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.types.json import Jsonb

from helpers.attribution import deliver, outcome, pay, sent_hours_ago
from helpers.db import event, ingest, new_project, reset_clock, set_clock
from helpers.workflows import (add_member, ago, attempt, checkout, checkouts, connect, create_run, get_run, preview,
                               process_runs, race, ready_shop)
from runhub_loader import cli
from runhub_loader.proxy import queries as proxy_queries
from runhub_loader.proxy.deploy import ANY_PARTITION, ApiFunction, ProxyError

pytestmark = pytest.mark.slow


def _catalog(url: str, schema: str = "runhub") -> dict:
    """name(identity arguments) -> (arguments with defaults, result, runhub roles granted EXECUTE),
    for the client API of a shard, or for everything in the proxy's schema runhub."""
    with psycopg.connect(url) as conn:
        if schema == "runhub" and conn.execute(proxy_queries.IS_RUNHUB_DATABASE).fetchone()[0]:
            rows = conn.execute(proxy_queries.API_FUNCTIONS).fetchall()
            return {f"{r[0]}({r[1]})": (r[2], r[3], r[9]) for r in rows}
        rows = conn.execute("""
            SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', pg_get_function_arguments(p.oid),
                   pg_get_function_result(p.oid),
                   array(SELECT r.rolname::text FROM aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
                          WHERE a.privilege_type = 'EXECUTE' AND r.rolname LIKE 'runhub\\_%%' AND r.rolname <> 'runhub_owner'
                          ORDER BY 1)
              FROM pg_proc p WHERE p.pronamespace = %s::regnamespace""", (schema,)).fetchall()
        return {r[0]: tuple(r[1:]) for r in rows}


def test_the_proxy_has_every_api_function_of_a_shard_with_its_arguments_result_and_grants(sharded):
    shard = _catalog(sharded.shard_urls[0])
    assert len(shard) >= 20
    assert _catalog(sharded.proxy_url) == shard  # nothing missing, nothing more, nothing different
    for url in sharded.shard_urls[1:]:
        assert _catalog(url) == shard


def test_the_proxy_refuses_to_guess_where_a_function_without_a_project_belongs():
    fn = ApiFunction("count_everything", "", "", "bigint", False, False, False, 0, [], ["runhub_app"])
    with pytest.raises(ProxyError, match="does not know where runhub.count_everything"):
        fn.route()
    assert "error_catalog" in ANY_PARTITION
    routed = ApiFunction("preview", "project uuid", "project uuid", "jsonb", False, False, False, 1, ["project"], [])
    assert routed.route() == "runhub_proxy.partition_of($1)"


def _scenario(app_url: str, ingest_url: str, at: str, lead_at: str) -> dict:
    """A shop's first day, as a client written against one database makes it, every answer kept
    with its ids and clock readings taken out. Its events happen at `at` and `lead_at`: the same
    instants for both sides (the answers show them as local minutes too)."""
    answers = {}
    with connect(app_url) as app, connect(ingest_url) as hook:
        owner = uuid.uuid4()
        project = app.execute("SELECT runhub.create_project(name => 'Café', owner => %s, timezone => 'Europe/Berlin', "
                              "currency => 'EUR', locale => 'de')", (owner,)).fetchone()[0]
        answers["settings"] = app.execute(
            "SELECT runhub.update_project_settings(project => %s, actor => %s, settings => %s)",
            (project, owner, Jsonb({"shopUrl": "https://cafe.example", "integrations": ["payments", "email"], "holdoutPercent": 0,
                                    "senderName": "Café"}))).fetchone()[0]
        member = add_member(app, project, owner, "member")
        for n in range(3):
            answers[f"ingest{n}"] = ingest(hook, project, event(at=at, key=f"k{n}",
                                                              customer={"email": f"c{n}@example.com"},
                                                              payload={"cartId": f"cart{n}"}, correlationId=f"cart{n}"))
        answers["replay"] = ingest(hook, project, event(at=at, key="k0",
                                                        customer={"email": "c0@example.com"},
                                                        payload={"cartId": "cart0"}, correlationId="cart0"))
        answers["batch"] = hook.execute("SELECT runhub.ingest_events(project => %s, events => %s)",
                                        (project, Jsonb([event(kind="lead_created", key="l1", at=lead_at,
                                                               customer={"email": "lead@example.com"})]))).fetchone()[0]
        answers["events"] = app.execute("SELECT runhub.list_events(project => %s, actor => %s, page_size => 2)",
                                        (project, owner)).fetchone()[0]
        answers["actions"] = app.execute("SELECT runhub.list_actions(project => %s, actor => %s)",
                                         (project, member)).fetchone()[0]
        app.execute("SELECT runhub.suppress(project => %s, actor => %s, email => 'c2@example.com', reason => 'manual')",
                    (project, owner))
        answers["preview"] = preview(app, project, owner, "recover_abandoned")
        answers["explain"] = app.execute(
            "SELECT runhub.explain_recipient(project => %s, actor => %s, action => 'recover_abandoned', email => 'C2@Example.com')",
            (project, owner)).fetchone()[0]
        run = create_run(app, project, owner, "recover_abandoned", "walk-1")
        answers["run"] = run
        answers["run replay"] = create_run(app, project, owner, "recover_abandoned", "walk-1")
        answers["get_run"] = get_run(app, project, owner, run["runId"])
        answers["list_runs"] = app.execute("SELECT runhub.list_runs(project => %s, actor => %s)", (project, owner)).fetchone()[0]
        answers["outcome"] = app.execute("SELECT runhub.workflow_outcome(project => %s, actor => %s, run => %s)",
                                         (project, owner, run["runId"])).fetchone()[0]
        answers["member may not run"] = attempt(create_run, app, project, member, "recover_abandoned", "walk-2")
        answers["stranger"] = attempt(preview, app, project, uuid.uuid4(), "recover_abandoned")
        answers["bad sort"] = attempt(lambda: app.execute("SELECT runhub.list_events(project => %s, actor => %s, sort => 'sideways')",
                                                          (project, owner)).fetchone())
        answers["bad event"] = attempt(ingest, hook, project, {"type": "checkout_started"})
        answers["no project"] = attempt(ingest, hook, uuid.uuid4(), event())
        answers["bad token"] = attempt(lambda: app.execute("SELECT runhub.unsubscribe(token => 'v2.1.abc.def')").fetchone())
        answers["catalog"] = app.execute("SELECT count(*) FROM runhub.error_catalog()").fetchone()[0]
        answers["criteria"] = app.execute("SELECT runhub.criteria_text(action => 'recover_abandoned', params => '{}', "
                                          "policy => '{}', locale => 'fr')").fetchone()[0]
    return _without_ids_and_clocks(answers, {str(project): "<project>", str(owner): "<owner>", str(member): "<member>"})


INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}(:\d{2})?)")


def _without_ids_and_clocks(value, names: dict):
    text = json.dumps(value, default=str, sort_keys=True)
    for real, name in names.items():
        text = text.replace(real, name)
    value = json.loads(text)

    def scrub(v):
        if isinstance(v, dict):
            return {k: ("<varies>" if k in {"runId", "previewId", "id", "eventId", "receivedAt", "requestedAt", "createdAt",
                                            "nextCursor", "expiresAt", "lastRunAt", "evaluatedAt", "cursor", "previewedAt",
                                            "projectId", "occurredAt"} else scrub(x)) for k, x in v.items()}
        if isinstance(v, list):
            return [scrub(x) for x in v]
        if isinstance(v, str) and INSTANT.fullmatch(v):
            return "<instant>"
        return v
    return scrub(value)


def test_a_client_written_for_one_database_gets_the_same_answers_through_the_proxy(sharded, proxy_login, db_url, login_as):
    """The same client code, unchanged, against one database and against the proxy: every
    answer and every refusal (SQLSTATE, key, detail) the same."""
    at, lead_at = ago(2), ago(1)
    direct = _scenario(login_as("runhub_app"), login_as("runhub_ingest"), at, lead_at)
    proxied = _scenario(proxy_login("app"), proxy_login("ingest"), at, lead_at)
    for name in direct:
        assert proxied[name] == direct[name], name
    assert proxied.keys() == direct.keys()
    assert direct["stranger"][:3] == ["err", "PT404", "projects.notFound"]
    assert direct["bad event"][0] == "err" and direct["bad sort"][0] == "err"


def test_errors_come_through_the_proxy_as_the_shard_raised_them(sharded):
    with psycopg.connect(sharded.proxy_url, autocommit=True) as proxy, pytest.raises(psycopg.Error) as refused:
        proxy.execute("SELECT runhub.create_project(name => '', owner => %s, timezone => 'UTC', currency => 'EUR', "
                      "locale => 'en')", (uuid.uuid4(),))
    err = refused.value
    assert (err.sqlstate, err.diag.message_primary) == ("PT400", "common.invalidInput")
    assert json.loads(err.diag.message_detail) == {"field": "name", "reason": "must be 1 to 200 characters"}
    assert err.diag.message_hint == "name is invalid: must be 1 to 200 characters"
    refused_id = uuid.uuid4()
    with psycopg.connect(sharded.proxy_url, autocommit=True) as proxy:
        with pytest.raises(psycopg.Error) as bad_zone:
            proxy.execute("SELECT runhub.create_project(name => 'Shop', owner => %s, timezone => 'Mars/Olympus', "
                          "currency => 'EUR', locale => 'en', id => %s)", (uuid.uuid4(), refused_id))
        assert bad_zone.value.sqlstate == "PT400"
        # a refused creation leaves no directory row behind
        assert proxy.execute("SELECT count(*) FROM runhub_proxy.directory WHERE project = %s",
                             (refused_id,)).fetchone()[0] == 0


def test_projects_spread_over_all_four_partitions_and_stay_on_theirs(sharded, proxy_login):
    with connect(proxy_login("app")) as app:
        projects = [new_project(app)[0] for _ in range(24)]
    placed = {p: sharded.partition_of(p) for p in projects}
    assert set(placed.values()) == {0, 1, 2, 3}
    for project, partition in placed.items():
        for other in range(4):
            with sharded.shard(other) as shard:
                there = shard.execute("SELECT count(*) FROM runhub.projects WHERE id = %s", (project,)).fetchone()[0]
            assert there == (1 if other == partition else 0)


def test_a_retried_create_project_answers_the_first_project_through_the_proxy(sharded, proxy_login):
    project_id, owner = uuid.uuid4(), uuid.uuid4()
    call = ("SELECT runhub.create_project(name => 'Shop', owner => %s, timezone => 'UTC', currency => 'EUR', "
            "locale => 'en', id => %s)")
    sessions = [connect(proxy_login("app")) for _ in range(4)]
    try:
        results = race(sessions, lambda i, s: s.execute(call, (owner, project_id)).fetchone()[0])
    finally:
        for s in sessions:
            s.close()
    assert results == [("ok", project_id)] * 4
    with connect(proxy_login("app")) as app:
        refused = attempt(lambda: app.execute(call, (uuid.uuid4(), project_id)).fetchone())
    assert refused[:3] == ("err", "PT409", "projects.idInUse")


def test_concurrent_idempotent_ingest_through_the_proxy_stores_each_event_once(sharded, proxy_login):
    with connect(proxy_login("app")) as app:
        project, _ = new_project(app)
    bodies = [event(key=f"same-{n}", customer={"email": f"p{n}@example.com"}) for n in range(20)]
    sessions = [connect(proxy_login("ingest")) for _ in range(6)]
    try:
        results = race(sessions, lambda i, s: [ingest(s, project, b)["inserted"] for b in bodies])
    finally:
        for s in sessions:
            s.close()
    inserted = [sum(r[1][n] for r in results) for n in range(len(bodies))]
    assert all(r[0] == "ok" for r in results) and inserted == [1] * len(bodies)
    with sharded.shard(sharded.partition_of(project)) as shard:
        assert shard.execute("SELECT count(*) FROM runhub.business_events WHERE project_id = %s",
                             (project,)).fetchone()[0] == len(bodies)


def test_the_create_run_rate_limit_holds_through_the_proxy(sharded, proxy_login):
    with connect(proxy_login("app")) as app, connect(proxy_login("ingest")) as hook:
        project, owner = ready_shop(app)
        checkouts(hook, project, 2, hours=2)
        preview(app, project, owner, "recover_abandoned")
        with sharded.shard(sharded.partition_of(project)) as shard:
            set_clock(shard, 0)  # the limiter's minute: all the calls fall in it
            try:
                results = [attempt(create_run, app, project, owner, "recover_abandoned", "one-key") for _ in range(15)]
            finally:
                reset_clock(shard)
    assert [r[0] for r in results] == ["ok"] * 10 + ["err"] * 5
    assert {r[1:3] for r in results[10:]} == {("PT429", "workflows.policy.rateLimited")}
    assert len({r[1]["runId"] for r in results[:10]}) == 1


def test_attribution_through_the_proxy_credits_the_run_on_its_shard(sharded, proxy_login):
    with connect(proxy_login("app")) as app, connect(proxy_login("ingest")) as hook:
        project, owner = ready_shop(app)
        checkout(hook, project, "buyer@example.com", hours=2, cart="cart-7", amount=1800)
        preview(app, project, owner, "recover_abandoned")
        run = create_run(app, project, owner, "recover_abandoned", "attr-1")["runId"]
        with sharded.shard(sharded.partition_of(project)) as shard:  # the shard's sender does its part
            process_runs(shard)
            deliver(shard, run)
            sent_hours_ago(shard, run, 1)
        pay(hook, project, email="buyer@example.com", amount=1800, cart="cart-7")
        result = outcome(app, project, owner, run)
    assert result["conversions"] == 1 and result["revenueCents"] == 1800, result


def test_a_digest_is_made_on_the_shard_that_owns_the_project(sharded, proxy_login):
    with connect(proxy_login("app")) as app:
        project, owner = ready_shop(app)
        got = app.execute("SELECT runhub.update_project_settings(%s, %s, %s)", (project, owner, Jsonb(
            {"dailyDigestEnabled": True, "dailyDigestRecipient": "owner@shop.example"}))).fetchone()[0]
        assert got["dailyDigestEnabled"] and got["dailyDigestNextAt"]
    with sharded.shard(sharded.partition_of(project)) as shard:
        shard.execute("UPDATE runhub.projects SET digest_next_at = now() - interval '1 minute' WHERE id = %s", (project,))
        shard.execute("CALL runhub.run_due_digests(NULL)")
        made = shard.execute("SELECT status FROM runhub.digests WHERE project_id = %s", (project,)).fetchall()
    assert made == [("skipped",)]  # a quiet day: the shard's job looked at it, once


def test_login_role_on_the_proxy_makes_the_login_on_every_shard(sharded, proxy_login, cluster, shard_cluster):
    url = proxy_login("ingest")
    name = psycopg.conninfo.conninfo_to_dict(url)["user"]
    for c in (cluster, shard_cluster):
        with psycopg.connect(c.url("postgres"), autocommit=True) as admin:
            assert admin.execute("SELECT pg_has_role(%s, 'runhub_ingest', 'MEMBER') AND NOT pg_has_role(%s, 'runhub_app', 'MEMBER')",
                                 (name, name)).fetchone()[0]
    for shard_url in sharded.shard_urls:
        dbname = psycopg.conninfo.conninfo_to_dict(shard_url)["dbname"]
        with psycopg.connect(shard_url, autocommit=True) as shard:
            settings = shard.execute("SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
                                     "JOIN pg_database d ON d.oid = s.setdatabase WHERE r.rolname = %s AND d.datname = %s",
                                     (name, dbname)).fetchone()
        assert settings and "statement_timeout=5s" in settings[0]


def test_the_proxy_reaches_a_shard_as_the_calling_login_so_the_shard_checks_its_grants(sharded, proxy_login):
    url = proxy_login("ingest")
    name = psycopg.conninfo.conninfo_to_dict(url)["user"]
    with connect(proxy_login("app")) as app:
        project, _ = new_project(app)
    partition = sharded.partition_of(project)
    with connect(url) as hook:
        ingest(hook, project, event())
        with sharded.shard(partition) as shard:  # PL/Proxy keeps its connection while the session lives
            users = {u for (u,) in shard.execute("SELECT usename FROM pg_stat_activity WHERE datname = current_database() "
                                                 "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")}
    assert name in users and "postgres" not in users


def test_an_ingest_login_cannot_call_the_app_api_through_the_proxy(sharded, proxy_login):
    with connect(proxy_login("ingest")) as hook, pytest.raises(psycopg.errors.InsufficientPrivilege):
        hook.execute("SELECT runhub.preview(%s, %s, 'recover_abandoned', '{}')", (uuid.uuid4(), uuid.uuid4()))
    with connect(proxy_login("ingest")) as hook, pytest.raises(psycopg.errors.InsufficientPrivilege):
        hook.execute("SELECT runhub_proxy.place_project(%s)", (uuid.uuid4(),))


def test_status_shows_every_shard(sharded):
    result = CliRunner().invoke(cli.main, ["status", "--proxy", sharded.proxy_url])
    assert result.exit_code == 0, result.output
    assert "proxy: 4 partition(s)" in result.output
    for p in range(4):
        assert f"== partition {p}:" in result.output
    assert result.output.count("outbox ") >= 4 and "KEYS DIFFER" not in result.output
    named = CliRunner().invoke(cli.main, ["status", "--database-url", sharded.proxy_url])  # a proxy's URL alone
    assert named.exit_code == 0 and "proxy: 4 partition(s)" in named.output


def test_runhub_deploy_refuses_a_proxy_database(sharded):
    result = CliRunner().invoke(cli.main, ["deploy", "--database-url", sharded.proxy_url])
    assert result.exit_code == 1 and "this is a runhub proxy database" in result.output
    with psycopg.connect(sharded.proxy_url) as proxy:  # nothing of a shard's schema went in
        assert proxy.execute("SELECT to_regclass('runhub.projects')").fetchone()[0] is None


def test_deploying_the_proxy_again_changes_nothing_and_other_shards_are_refused(sharded, proxy_login):
    from runhub_loader.proxy.deploy import deploy_proxy

    before = _catalog(sharded.proxy_url)
    result = deploy_proxy(sharded.proxy_url, sharded.shard_urls)
    assert result.migrations == [] and result.functions == len(before)
    assert _catalog(sharded.proxy_url) == before
    with connect(proxy_login("app")) as app:  # still routed, grants kept
        assert new_project(app)[0]
    with pytest.raises(ProxyError, match="already routes to other shards"):
        deploy_proxy(sharded.proxy_url, sharded.shard_urls[:2])
    result = CliRunner().invoke(cli.main, ["proxy", "deploy", "--database-url", sharded.proxy_url,
                                           "--shard", sharded.shard_urls[0]])
    assert result.exit_code == 1 and "already routes to other shards" in result.output


def test_every_shard_holds_out_with_partition_0s_key(sharded):
    """Who a run holds out is keyed by it: after a move, a run executed again holds out the same people."""
    keys = set()
    for url in sharded.shard_urls:
        with psycopg.connect(url) as shard:
            keys.add(bytes(shard.execute("SELECT value FROM runhub.secrets WHERE name = 'holdout'").fetchone()[0]))
    assert len(keys) == 1


def test_rotating_the_unsubscribe_key_through_the_proxy_gives_every_shard_the_new_key(sharded, proxy_login):
    def key_sets():
        sets = []
        for url in sharded.shard_urls:
            with psycopg.connect(url) as shard:
                sets.append(shard.execute("SELECT kid, secret, revoked_at IS NOT NULL FROM runhub.unsubscribe_keys "
                                          "ORDER BY kid").fetchall())
        return sets

    before = key_sets()
    assert all(s == before[0] for s in before)  # partition 0's keys, given at deploy
    result = CliRunner().invoke(cli.main, ["proxy", "rotate-secret", "--database-url", sharded.proxy_url])
    assert result.exit_code == 0, result.output
    after = key_sets()
    assert all(s == after[0] for s in after) and len(after[0]) == len(before[0]) + 1
    with connect(proxy_login("app")) as app:
        project, _ = new_project(app)
    signer = (sharded.partition_of(project) + 1) % 4  # signed on one shard, verified on the shop's own
    with sharded.shard(signer) as shard:
        token = shard.execute("SELECT runhub.unsubscribe_token(%s, 'fan@example.com')", (project,)).fetchone()[0]
    assert token.split(".")[1] == str(after[0][-1][0])  # the new key signs
    with connect(proxy_login("app")) as app:
        app.execute("SELECT runhub.unsubscribe(token => %s)", (token,))
    with sharded.shard(sharded.partition_of(project)) as shard:
        assert shard.execute("SELECT count(*) FROM runhub.suppressions WHERE project_id = %s", (project,)).fetchone()[0] == 1
