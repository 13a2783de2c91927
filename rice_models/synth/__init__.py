"""Synthetic RICE-vs-recurrence cohorts on real anatomy (MNI152), in the landing-zone layout.

Public API:
    generate_cohort: write out/cohort.csv, out/<patient>/{mri_postop,mri_event,dose}.nii.gz and
        out/ground_truth.json; returns a SynthCohort.
    sample_latents / sample_latent_table: the label model (features -> P(RICE) -> label).
    bayes_separability: the per-channel ceiling of the planted signal.

The generative model, its parameters and what the demo's numbers mean: docs/synthetic_cohort.md.
"""

from rice_models.synth.cohort import PatientSpec, SynthCohort, generate_cohort
from rice_models.synth.label_model import (
    CHANNEL_COMBINATIONS,
    LatentTable,
    PatientLatents,
    bayes_separability,
    sample_latent_table,
    sample_latents,
)

__all__ = [
    "CHANNEL_COMBINATIONS",
    "LatentTable",
    "PatientLatents",
    "PatientSpec",
    "SynthCohort",
    "bayes_separability",
    "generate_cohort",
    "sample_latent_table",
    "sample_latents",
]
