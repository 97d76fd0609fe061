"""sql:validate: parse a Dataflow SQL query (GoogleSQL) and say what it reads.

sqlglot's BigQuery dialect is the parser. Dataflow SQL names its sources with a fixed
prefix (`pubsub.topic.`, `bigquery.table.`, `datacatalog.entry.`); a query that reads a
Pub/Sub topic is unbounded. Failures are answers, not errors: a 200 with `errorMessage`
saying what is wrong and where, GoogleSQL style `[at line:column]`.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

# prefix -> number of name parts after the prefix
SOURCES = {("pubsub", "topic"): 2, ("bigquery", "table"): 3, ("datacatalog", "entry"): 4}
SHAPES = ("pubsub.topic.`project`.`topic`, bigquery.table.`project`.`dataset`.`table` or "
          "datacatalog.entry.`project`.`location`.`entry_group`.`entry`")


def validate(query: str | None) -> dict:
    if not query or not query.strip():
        return {"errorMessage": "Syntax error: the query is empty; pass it in the `query` parameter [at 1:1]"}
    try:
        statements = [s for s in sqlglot.parse(query, read="bigquery") if s is not None]
    except sqlglot.errors.ParseError as error:
        first = error.errors[0] if error.errors else {}
        return {"errorMessage": f"Syntax error: {first.get('description', str(error))} "
                                f"[at {first.get('line', 1)}:{first.get('col', 1)}]"}
    except sqlglot.errors.SqlglotError as error:
        return {"errorMessage": f"Syntax error: {error}"}
    except RecursionError:
        return {"errorMessage": "Syntax error: the query nests expressions too deeply to parse [at 1:1]"}
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        return {"errorMessage": "Dataflow SQL accepts exactly one query statement (SELECT ...)."}
    unbounded = False
    ctes = {cte.alias for cte in statements[0].find_all(exp.CTE)}
    for table in statements[0].find_all(exp.Table):
        parts = [p.name for p in table.parts]
        if len(parts) == 1 and parts[0] in ctes:
            continue
        expected = SOURCES.get(tuple(parts[:2]))
        if expected is None or len(parts) != 2 + expected:
            return {"errorMessage": f"Table not found: {'.'.join(parts)}; Dataflow SQL reads {SHAPES}"
                                    f"{_at(table)}"}
        unbounded |= parts[0] == "pubsub"
    info = {"queryProperty": ["HAS_UNBOUNDED_SOURCE"]} if unbounded else {}
    return {"errorMessage": "", "queryInfo": info}


def _at(table: exp.Table) -> str:
    first = table.parts[0]
    line, end = first.meta.get("line"), first.meta.get("col")
    if not line or not end:
        return ""
    return f" [at {line}:{end - len(first.name) + 1}]"  # sqlglot's col is the token's last column
