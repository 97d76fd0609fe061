"""sql:validate over HTTP: GoogleSQL parsing, Dataflow SQL source names, unbounded sources."""

from __future__ import annotations

import pytest

REGION = "us-central1"


def validate(http, project, query):
    r = http.get(f"/v1b3/projects/{project}/locations/{REGION}/sql:validate", params={"query": query})
    assert r.status_code == 200, r.text
    return r.json()


def test_pubsub_query_is_unbounded(http, project, check):
    out = validate(http, project, "SELECT tr.* FROM pubsub.topic.`my-project`.`transactions` AS tr "
                                  "WHERE tr.amount > 10")
    check(out, "ValidateResponse")
    assert not out.get("errorMessage")
    assert out["queryInfo"]["queryProperty"] == ["HAS_UNBOUNDED_SOURCE"]


def test_bigquery_query_is_bounded(http, project, check):
    out = validate(http, project, "SELECT state, COUNT(*) AS n FROM bigquery.table.`p`.`sales`.`orders` "
                                  "GROUP BY state")
    check(out, "ValidateResponse")
    assert not out.get("errorMessage")
    assert "HAS_UNBOUNDED_SOURCE" not in out.get("queryInfo", {}).get("queryProperty", [])


def test_join_with_datacatalog_entry(http, project):
    out = validate(http, project, "SELECT t.k FROM pubsub.topic.`p`.`t` AS t JOIN "
                                  "datacatalog.entry.`p`.`us`.`group`.`entry` AS e ON t.k = e.k")
    assert not out.get("errorMessage")
    assert out["queryInfo"]["queryProperty"] == ["HAS_UNBOUNDED_SOURCE"]


@pytest.mark.parametrize("query, fragment", [
    ("SELECT a FROM\n  orders", "Table not found: orders"),
    ("SELECT a FROM pubsub.topic.`only-project`", "Table not found: pubsub.topic.only-project"),
    ("SELECT a FROM t WHERE", "Syntax error"),
    ("", "empty"),
    ("DELETE FROM bigquery.table.`p`.`d`.`t` WHERE TRUE", "exactly one query"),
])
def test_invalid_queries_answer_200_with_a_located_message(http, project, query, fragment, check):
    out = validate(http, project, query)
    check(out, "ValidateResponse")
    assert fragment in out["errorMessage"]
    assert "queryInfo" not in out


def test_error_location_is_line_and_column(http, project):
    out = validate(http, project, "SELECT a FROM\n  orders")
    assert out["errorMessage"].endswith("[at 2:3]")
