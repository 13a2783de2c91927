-- RICE cohort catalog: schema version 2, "a living cohort" (applied by data_catalog/migrations.py).
--
-- * Profiles coexist: an artifact that carries a profile has the id '<asset>@<profile>/<partition>/<name>'
--   (e.g. 'registered_volumes@quick/P001/dose'), so a `paper` run never replaces a `quick` row. Artifacts
--   without a profile (raw_scans, dose_maps, cohort_manifest) keep '<asset>/<partition>/<name>'.
-- * Experiments: `experiments` holds each experiment version that cv_splits declared (profile settings,
--   split, input data versions, training code version); `splits`, `models`, `metrics`, `predictions`
--   and `ablation` rows carry the profile and the experiment version they belong to.
-- * The test set is frozen per profile: `split_resets` records each explicit `rice split --reset`.
-- * A patient removed from cohort.csv is marked `withdrawn` (its derived data is deleted).
-- Applied migrations are never edited; a later change is a new step.

ALTER TABLE patients ADD COLUMN withdrawn TIMESTAMP;                 -- NULL: active

-- ------------------------------------------------------------------ artifacts: the profile joins the id
CREATE TABLE artifacts_v2 (
    artifact_id   TEXT PRIMARY KEY,
    asset         TEXT NOT NULL CHECK (asset <> 'scan' AND strpos(asset, '/') = 0 AND strpos(asset, '@') = 0
                                       AND asset <> ''),
    partition_key TEXT NOT NULL CHECK (strpos(partition_key, '/') = 0 AND partition_key <> ''),
    name          TEXT NOT NULL CHECK (name <> ''),
    path          TEXT,
    sha256        TEXT CHECK (sha256 IS NULL OR regexp_full_match(sha256, '[0-9a-f]{64}')),
    profile       TEXT CHECK (profile IS NULL OR regexp_full_match(profile, '[A-Za-z0-9_.-]{1,64}')),
    settings      JSON,
    code_version  TEXT,
    run_id        TEXT,
    created       TIMESTAMP NOT NULL,
    metadata      JSON NOT NULL DEFAULT '{}',
    CHECK (artifact_id = asset || coalesce('@' || profile, '') || '/' || partition_key || '/' || name)
);

CREATE TEMPORARY TABLE artifact_id_map AS
    SELECT artifact_id AS old_id,
           asset || coalesce('@' || profile, '') || '/' || partition_key || '/' || name AS new_id
    FROM artifacts;

INSERT INTO artifacts_v2
    SELECT m.new_id, a.asset, a.partition_key, a.name, a.path, a.sha256, a.profile, a.settings,
           a.code_version, a.run_id, a.created, a.metadata
    FROM artifacts a JOIN artifact_id_map m ON m.old_id = a.artifact_id;

CREATE TABLE lineage_v2 (
    child_id    TEXT NOT NULL,
    parent_id   TEXT NOT NULL,
    parent_kind TEXT NOT NULL CHECK (parent_kind IN ('artifact', 'scan')),
    PRIMARY KEY (child_id, parent_id),
    CHECK (child_id <> parent_id)
);

INSERT INTO lineage_v2
    SELECT DISTINCT coalesce(c.new_id, l.child_id),
           CASE WHEN l.parent_kind = 'artifact' THEN coalesce(p.new_id, l.parent_id) ELSE l.parent_id END,
           l.parent_kind
    FROM lineage l
    LEFT JOIN artifact_id_map c ON c.old_id = l.child_id
    LEFT JOIN artifact_id_map p ON p.old_id = l.parent_id;

DROP TABLE lineage;
DROP TABLE artifacts;
ALTER TABLE artifacts_v2 RENAME TO artifacts;
ALTER TABLE lineage_v2 RENAME TO lineage;

-- ------------------------------------------------------- result tables: profile and experiment version
ALTER TABLE splits ADD COLUMN profile TEXT;
ALTER TABLE splits ADD COLUMN experiment_version TEXT;
ALTER TABLE models ADD COLUMN experiment_version TEXT;
ALTER TABLE metrics ADD COLUMN profile TEXT;
ALTER TABLE metrics ADD COLUMN experiment_version TEXT;
ALTER TABLE predictions ADD COLUMN profile TEXT;
ALTER TABLE predictions ADD COLUMN experiment_version TEXT;

-- Earlier splits keep their test set: they belong to the profile of the cv_splits artifact that wrote them.
UPDATE splits SET profile = (SELECT a.profile FROM artifacts a JOIN artifact_id_map m ON m.new_id = a.artifact_id
                             WHERE m.old_id = splits.artifact_id);
UPDATE splits SET artifact_id = (SELECT new_id FROM artifact_id_map WHERE old_id = splits.artifact_id)
    WHERE artifact_id IN (SELECT old_id FROM artifact_id_map);
UPDATE metrics SET artifact_id = (SELECT new_id FROM artifact_id_map WHERE old_id = metrics.artifact_id)
    WHERE artifact_id IN (SELECT old_id FROM artifact_id_map);
UPDATE predictions SET artifact_id = (SELECT new_id FROM artifact_id_map WHERE old_id = predictions.artifact_id)
    WHERE artifact_id IN (SELECT old_id FROM artifact_id_map);
UPDATE models SET artifact_id = (SELECT new_id FROM artifact_id_map WHERE old_id = models.artifact_id)
    WHERE artifact_id IN (SELECT old_id FROM artifact_id_map);

DROP TABLE artifact_id_map;

-- The ablation table was a free-form table replaced whole by each evaluation; it is derived (rebuilt by
-- evaluation_tables) and now keeps one set of rows per (profile, experiment version).
DROP TABLE IF EXISTS ablation;
CREATE TABLE ablation (
    profile            TEXT NOT NULL,
    experiment_version TEXT NOT NULL,
    combination        TEXT NOT NULL,
    n_folds            INTEGER,
    val_f1_mean        DOUBLE,            -- the study's figure: per-fold best-epoch validation macro F1
    val_f1_sd          DOUBLE,
    oof_f1             DOUBLE,            -- pooled out-of-fold macro F1 of the fixed-epoch fold models
    oof_f1_lo          DOUBLE,
    oof_f1_hi          DOUBLE,
    oof_auc            DOUBLE,
    n_oof              INTEGER,
    test_f1            DOUBLE,            -- the fold ensemble's decision rule on the test set
    test_f1_lo         DOUBLE,
    test_f1_hi         DOUBLE,
    n_test             INTEGER,
    voting             TEXT,
    threshold          DOUBLE,
    ci_level           DOUBLE,
    n_boot             INTEGER,
    champion           BOOLEAN NOT NULL DEFAULT false,
    created            TIMESTAMP NOT NULL
);

-- Each experiment cv_splits declared: what its version is a hash of.
CREATE TABLE experiments (
    experiment_version TEXT PRIMARY KEY,
    profile            TEXT NOT NULL,
    settings           JSON NOT NULL,     -- the profile's resolved settings (training overrides included)
    code_version       TEXT NOT NULL,     -- the training code version
    data_versions      JSON NOT NULL,     -- patient -> data version of its registered volumes
    test_generated     BOOLEAN NOT NULL,  -- the test set was drawn here (no cohort.csv row said test)
    n_test             INTEGER,
    n_development      INTEGER,
    excluded           JSON NOT NULL DEFAULT '{}',   -- patient -> why it is not in the experiment
    artifact_id        TEXT,
    created            TIMESTAMP NOT NULL
);

-- `rice split --reset`: the only way to redraw a profile's frozen test set.
CREATE TABLE split_resets (
    profile  TEXT NOT NULL,
    reset_at TIMESTAMP NOT NULL,
    reason   TEXT
);
