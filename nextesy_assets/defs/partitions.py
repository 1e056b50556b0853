"""One dynamic partition per landing file (batch)."""

import dagster as dg

from ..lib import properties as props

batch_partitions = dg.DynamicPartitionsDefinition(name=props.BATCH_PARTITIONS)
