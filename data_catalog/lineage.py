"""Lineage walks as recursive CTEs over the `lineage` table.

A walk keeps (node, depth) pairs with UNION (set semantics), so a diamond does not multiply rows, and
stops at `MAX_DEPTH` so a cycle, which the writers never create, cannot loop forever.
"""

from typing import Any

import duckdb

from data_catalog.records import LineageNode

MAX_DEPTH = 64

_NODE_COLUMNS = """
    n.node_id, n.node_kind, n.depth,
    coalesce(a.path, s.source_path) AS path,
    coalesce(a.sha256, s.sha256) AS sha256,
    a.asset, a.partition_key, a.name,
    s.patient_id, s.channel,
    (a.artifact_id IS NOT NULL OR s.scan_id IS NOT NULL) AS known
FROM nodes n
LEFT JOIN artifacts a ON n.node_kind = 'artifact' AND a.artifact_id = n.node_id
LEFT JOIN scans s ON n.node_kind = 'scan' AND s.scan_id = n.node_id
ORDER BY n.depth, n.node_kind, n.node_id
"""

ANCESTORS_SQL = f"""
WITH RECURSIVE walk(node_id, node_kind, depth) AS (
    SELECT parent_id, parent_kind, 1 FROM lineage WHERE child_id = $start
    UNION
    SELECT l.parent_id, l.parent_kind, w.depth + 1
    FROM walk w JOIN lineage l ON l.child_id = w.node_id
    WHERE w.node_kind = 'artifact' AND w.depth < $max_depth
),
nodes AS (SELECT node_id, node_kind, min(depth) AS depth FROM walk GROUP BY node_id, node_kind)
SELECT {_NODE_COLUMNS}
"""

DESCENDANTS_SQL = f"""
WITH RECURSIVE walk(node_id, node_kind, depth) AS (
    SELECT child_id, 'artifact', 1 FROM lineage WHERE parent_id = $start
    UNION
    SELECT l.child_id, 'artifact', w.depth + 1
    FROM walk w JOIN lineage l ON l.parent_id = w.node_id AND l.parent_kind = 'artifact'
    WHERE w.depth < $max_depth
),
nodes AS (SELECT node_id, node_kind, min(depth) AS depth FROM walk GROUP BY node_id, node_kind)
SELECT {_NODE_COLUMNS}
"""


def _node(row: tuple[Any, ...]) -> LineageNode:
    node_id, kind, depth, path, sha256, asset, partition_key, name, patient_id, channel, known = row
    return LineageNode(
        id=node_id,
        kind=kind,
        depth=int(depth),
        path=path,
        sha256=sha256,
        asset=asset,
        partition_key=partition_key,
        name=name,
        patient_id=patient_id,
        channel=channel,
        known=bool(known),
    )


def ancestors(con: duckdb.DuckDBPyConnection, start: str) -> list[LineageNode]:
    """Every artifact and scan `start` was derived from, nearest first."""
    rows = con.execute(ANCESTORS_SQL, {"start": start, "max_depth": MAX_DEPTH}).fetchall()
    return [_node(row) for row in rows]


def descendants(con: duckdb.DuckDBPyConnection, start: str) -> list[LineageNode]:
    """Every artifact derived from `start` (an artifact or scan id), nearest first."""
    rows = con.execute(DESCENDANTS_SQL, {"start": start, "max_depth": MAX_DEPTH}).fetchall()
    return [_node(row) for row in rows]
