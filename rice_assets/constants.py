"""Names shared across the Dagster layer: asset groups, pools, partition names."""

COHORT_GROUP = "cohort"
PREPROCESSING_GROUP = "preprocessing"
TRAINING_GROUP = "training"
EVALUATION_GROUP = "evaluation"
INFERENCE_GROUP = "inference"

GPU_POOL = "gpu"
PATIENTS_PARTITION = "patients"
TEST_PATIENTS_PARTITION = "test_patients"
UNLABELLED_PARTITION = "unlabelled_patients"

PATIENT_ASSETS = ("raw_scans", "dose_maps", "registered_volumes", "occlusion_maps", "patient_predictions")
"""Assets partitioned by patient: what a withdrawn patient's derived data is made of."""
