"""The one resource every Nextesy asset and sensor uses: where data lives and what it must look like."""

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from ..lib import iceberg
from ..lib.settings import Settings
from ..lib.thresholds import Thresholds

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog


class NextesyResource(dg.ConfigurableResource):
    """Storage locations, catalogs and the input contract.

    Every field left unset falls back to its `NEXTESY_*` environment variable, read when a run or a
    sensor tick needs it (never at import), and then to the embedded default under `NEXTESY_HOME`.
    Catalogs come from pyiceberg's own configuration when it names catalogs `source` and `replica`.
    """

    home: str | None = Field(default=None, description="Root of the embedded default (NEXTESY_HOME, ./.nextesy).")
    landing_uri: str | None = Field(default=None, description="Landing prefix (NEXTESY_LANDING_URI).")
    warehouse_uri: str | None = Field(default=None, description="Source warehouse (NEXTESY_WAREHOUSE_URI).")
    replica_uri: str | None = Field(default=None, description="Replica warehouse (NEXTESY_REPLICA_URI).")
    dims: int | None = Field(default=None, description="Vector dimension (NEXTESY_DIMS, 768).")
    default_model: str | None = Field(
        default=None, description="Model for records without one (NEXTESY_DEFAULT_MODEL)."
    )
    egress_usd_per_gb: float = Field(default=0.09, description="Egress price used to cost replica transfers.")

    def settings(self) -> Settings:
        return Settings.load(
            {
                "home": self.home,
                "landing_uri": self.landing_uri,
                "warehouse_uri": self.warehouse_uri,
                "replica_uri": self.replica_uri,
                "dims": self.dims,
                "default_model": self.default_model,
            }
        )

    def thresholds(self) -> Thresholds:
        """Data-quality limits from their NEXTESY_* variables (see the README)."""
        return Thresholds.load()

    def source_catalog(self) -> "Catalog":
        return iceberg.source_catalog(self.settings())
