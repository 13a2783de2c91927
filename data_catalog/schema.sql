-- RICE cohort catalog: schema version 1 (applied by data_catalog/migrations.py).
--
-- Conventions
--   * Timestamps are UTC, stored as naive TIMESTAMP.
--   * JSON columns hold json.dumps output (objects for covariates/settings/metadata, arrays for geometry).
--   * Identifiers are stable and derived: scans  'scan/<patient_id>/<channel>',
--                                          artifacts '<asset>/<partition_key>/<name>'.
--   * No foreign keys: re-materialising one partition must be able to replace its rows while rows of
--     other partitions still point at them. data_catalog checks references when it writes.
--   * Applied migrations are never edited; a change to this schema is a new migration step.

CREATE TABLE schema_version (
    version     INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    checksum    TEXT NOT NULL,          -- sha256 of the migration's SQL text
    applied     TIMESTAMP NOT NULL
);

-- One row per cohort.csv row. split: 'test' = independent test set, 'dev' = development (CV) set.
CREATE TABLE patients (
    patient_id  TEXT PRIMARY KEY CHECK (regexp_full_match(patient_id, '[A-Za-z0-9_-]{1,64}')),
    label       TEXT CHECK (label IN ('rice', 'recurrence')),        -- NULL: unlabelled
    split       TEXT NOT NULL DEFAULT 'dev' CHECK (split IN ('test', 'dev')),
    dose_kind   TEXT NOT NULL DEFAULT 'total' CHECK (dose_kind IN ('total', 'fraction')),
    n_fractions INTEGER CHECK (n_fractions > 0),
    covariates  JSON NOT NULL DEFAULT '{}',                           -- any further cohort.csv column
    updated     TIMESTAMP NOT NULL,
    CHECK (dose_kind = 'total' OR n_fractions IS NOT NULL)
);

-- Source files from the landing zone, one per patient and channel.
CREATE TABLE scans (
    scan_id     TEXT PRIMARY KEY,
    patient_id  TEXT NOT NULL,
    channel     TEXT NOT NULL CHECK (channel IN ('mri_postop', 'mri_event', 'dose')),
    source_path TEXT NOT NULL,
    sha256      TEXT NOT NULL CHECK (regexp_full_match(sha256, '[0-9a-f]{64}')),
    modality    TEXT,                                                -- e.g. 'MR', 'RTDOSE'
    format      TEXT NOT NULL CHECK (format IN ('nifti', 'dicom', 'rtdose')),
    shape       JSON,                                                -- [nx, ny, nz]
    spacing     JSON,                                                -- [sx, sy, sz] in mm
    affine      JSON,                                                -- 4x4 voxel-to-world (RAS)
    recorded    TIMESTAMP NOT NULL,
    UNIQUE (patient_id, channel),
    CHECK (scan_id = 'scan/' || patient_id || '/' || channel)
);

-- Every derived file (or logical output) of an asset partition.
CREATE TABLE artifacts (
    artifact_id   TEXT PRIMARY KEY,
    asset         TEXT NOT NULL CHECK (asset <> 'scan' AND strpos(asset, '/') = 0 AND asset <> ''),
    partition_key TEXT NOT NULL CHECK (strpos(partition_key, '/') = 0 AND partition_key <> ''),
    name          TEXT NOT NULL CHECK (name <> ''),
    path          TEXT,
    sha256        TEXT CHECK (sha256 IS NULL OR regexp_full_match(sha256, '[0-9a-f]{64}')),
    profile       TEXT,
    settings      JSON,                                              -- the profile's resolved settings
    code_version  TEXT,
    run_id        TEXT,                                              -- Dagster run id
    created       TIMESTAMP NOT NULL,
    metadata      JSON NOT NULL DEFAULT '{}',
    CHECK (artifact_id = asset || '/' || partition_key || '/' || name)
);

-- Edges child artifact -> parent (artifact or source scan).
CREATE TABLE lineage (
    child_id    TEXT NOT NULL,
    parent_id   TEXT NOT NULL,
    parent_kind TEXT NOT NULL CHECK (parent_kind IN ('artifact', 'scan')),
    PRIMARY KEY (child_id, parent_id),
    CHECK (child_id <> parent_id)
);

-- Patient-level cross-validation folds and the test set (written by cv_splits).
-- A development patient has one row per fold (role 'train' or 'val'); a test patient one row, fold NULL.
CREATE TABLE splits (
    patient_id  TEXT NOT NULL,
    fold        INTEGER CHECK (fold >= 0),
    role        TEXT NOT NULL CHECK (role IN ('train', 'val', 'test')),
    seed        INTEGER,
    n_folds     INTEGER CHECK (n_folds > 0),
    artifact_id TEXT,
    created     TIMESTAMP NOT NULL,
    CHECK ((role = 'test') = (fold IS NULL))
);

-- Trained networks: one per combination x fold, and fold ensembles (fold NULL).
CREATE TABLE models (
    model_id        TEXT PRIMARY KEY,                                -- e.g. the fold_models artifact id
    combination     TEXT NOT NULL CHECK (combination IN (
                        'postop', 'event', 'dose', 'postop+event', 'postop+dose', 'event+dose',
                        'postop+event+dose')),
    fold            INTEGER CHECK (fold >= 0),                       -- NULL: the fold ensemble
    mlflow_run_id   TEXT,
    registered_name TEXT,                                            -- MLflow registered model name
    model_version   TEXT,                                            -- MLflow model version
    alias           TEXT,                                            -- e.g. 'champion'
    artifact_id     TEXT,
    profile         TEXT,
    created         TIMESTAMP NOT NULL,
    metadata        JSON NOT NULL DEFAULT '{}'
);

-- Long-format metrics: one value per (scope, combination, fold, metric).
CREATE TABLE metrics (
    scope       TEXT NOT NULL,                                       -- e.g. 'cv_val', 'test_ensemble'
    combination TEXT NOT NULL,
    fold        INTEGER,                                             -- NULL: aggregate or ensemble
    metric      TEXT NOT NULL,                                       -- e.g. 'f1_macro', 'auc'
    value       DOUBLE,
    ci_low      DOUBLE,                                              -- bootstrap interval
    ci_high     DOUBLE,
    n           INTEGER,
    artifact_id TEXT,
    created     TIMESTAMP NOT NULL
);

-- Per-patient predictions (validation folds, test ensemble, unlabelled inference).
CREATE TABLE predictions (
    patient_id    TEXT NOT NULL,
    scope         TEXT NOT NULL,                                     -- e.g. 'cv_val', 'test', 'inference'
    combination   TEXT NOT NULL,
    fold          INTEGER,                                           -- NULL: ensemble
    model_version TEXT,
    prob_rice     DOUBLE NOT NULL CHECK (prob_rice BETWEEN 0 AND 1),
    predicted     TEXT CHECK (predicted IN ('rice', 'recurrence')),
    label         TEXT CHECK (label IN ('rice', 'recurrence')),
    artifact_id   TEXT,
    created       TIMESTAMP NOT NULL
);
