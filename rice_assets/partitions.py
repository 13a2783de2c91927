"""Partition definitions: one dynamic partition per patient, added as patients are validated."""

import dagster as dg

from rice_assets.constants import PATIENTS_PARTITION

patients_partitions = dg.DynamicPartitionsDefinition(name=PATIENTS_PARTITION)
