from conftest import event, ingest, new_project


def test_ingest_and_list(conn):
    project, _ = new_project(conn)
    first = ingest(conn, project, event(key="k1"))
    again = ingest(conn, project, event(key="k1"))
    assert first["inserted"] and not again["inserted"] and first["eventId"] == again["eventId"]
    page = conn.execute("SELECT runhub.list_events(%s)", (project,)).fetchone()[0]
    assert [e["idempotencyKey"] for e in page["events"]] == ["k1"]
