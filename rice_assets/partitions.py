"""Partition definitions: one dynamic partition per patient, added as patients are validated, and the two
subsets the model is applied to (the test patients of the current experiment, the unlabelled patients).

`patients` is kept in step by `cohort_manifest` and the landing-zone sensor; `unlabelled_patients` by the
same two (a valid patient whose cohort.csv label is empty); `test_patients` by `cv_splits` (the frozen test
set of the experiment it declares). So "materialise all" of `occlusion_maps` (test patients) or
`patient_predictions` (unlabelled patients) only asks for partitions that can succeed.
"""

from collections.abc import Iterable

import dagster as dg

from rice_assets.constants import PATIENTS_PARTITION, TEST_PATIENTS_PARTITION, UNLABELLED_PARTITION
from rice_models.channels import COMBINATIONS, FOLDS

patients_partitions = dg.DynamicPartitionsDefinition(name=PATIENTS_PARTITION)
test_patients_partitions = dg.DynamicPartitionsDefinition(name=TEST_PATIENTS_PARTITION)
"""The test set of the current experiment (written by cv_splits): occlusion_maps."""
unlabelled_partitions = dg.DynamicPartitionsDefinition(name=UNLABELLED_PARTITION)
"""Valid, active patients without a label (written by cohort_manifest and the sensor): patient_predictions."""

combination_partitions = dg.StaticPartitionsDefinition(list(COMBINATIONS))
fold_partitions = dg.StaticPartitionsDefinition(list(FOLDS))
cell_partitions = dg.MultiPartitionsDefinition(
    {"combination": combination_partitions, "fold": fold_partitions}
)
"""One fold model per cell: keys like `postop+event+dose|0` (combination|fold)."""


def sync_partitions(
    instance: dg.DagsterInstance, name: str, wanted: Iterable[str]
) -> tuple[list[str], list[str]]:
    """Make the dynamic partitions `name` exactly `wanted`; return (added, removed), each sorted."""
    target = set(wanted)
    known = set(instance.get_dynamic_partitions(name))
    added, removed = sorted(target - known), sorted(known - target)
    if added:
        instance.add_dynamic_partitions(name, added)
    for key in removed:
        instance.delete_dynamic_partition(name, key)
    return added, removed
