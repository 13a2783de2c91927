"""The RICE cohort catalog: a DuckDB file holding patients, source scans, artifacts and their lineage.

Never imports dagster or torch (the label vocabulary comes from `rice_models.labels`, a module without
dependencies). Open it with `Catalog(path)`; every write is one short transaction under a cross-process
writers' lock and every read a read-only connection without it, so parallel Dagster processes share the file.
"""

from data_catalog.catalog import Catalog
from data_catalog.connection import CatalogBusyError, lock_path, read_transaction, transaction
from data_catalog.migrations import LATEST_VERSION, MIGRATIONS, Migration, SchemaMismatchError, migrate
from data_catalog.records import (
    CHANNELS,
    ArtifactRecord,
    Channel,
    ExperimentRecord,
    Label,
    LineageNode,
    NodeKind,
    ParentRef,
    PatientRecord,
    Role,
    ScanRecord,
    Split,
    SplitMemory,
    SplitRecord,
    StoredArtifact,
    artifact_id,
    parse_artifact_id,
    scan_id,
)

__all__ = [
    "CHANNELS",
    "LATEST_VERSION",
    "MIGRATIONS",
    "ArtifactRecord",
    "Catalog",
    "CatalogBusyError",
    "Channel",
    "ExperimentRecord",
    "Label",
    "LineageNode",
    "Migration",
    "NodeKind",
    "ParentRef",
    "PatientRecord",
    "Role",
    "ScanRecord",
    "SchemaMismatchError",
    "Split",
    "SplitMemory",
    "SplitRecord",
    "StoredArtifact",
    "artifact_id",
    "lock_path",
    "migrate",
    "parse_artifact_id",
    "scan_id",
    "read_transaction",
    "transaction",
]
