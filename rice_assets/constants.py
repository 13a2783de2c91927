"""Names shared across the Dagster layer: asset groups, pools, partition names."""

COHORT_GROUP = "cohort"
PREPROCESSING_GROUP = "preprocessing"
TRAINING_GROUP = "training"
EVALUATION_GROUP = "evaluation"
INFERENCE_GROUP = "inference"

GPU_POOL = "gpu"
PATIENTS_PARTITION = "patients"
