"""Partition definitions: one dynamic partition per patient, added as patients are validated."""

import dagster as dg

from rice_assets.constants import PATIENTS_PARTITION
from rice_models.channels import COMBINATIONS, FOLDS

patients_partitions = dg.DynamicPartitionsDefinition(name=PATIENTS_PARTITION)

combination_partitions = dg.StaticPartitionsDefinition(list(COMBINATIONS))
fold_partitions = dg.StaticPartitionsDefinition(list(FOLDS))
cell_partitions = dg.MultiPartitionsDefinition(
    {"combination": combination_partitions, "fold": fold_partitions}
)
"""One fold model per cell: keys like `postop+event+dose|0` (combination|fold)."""
