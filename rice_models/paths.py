"""Where the pipeline reads and writes: everything under RICE_HOME (default ./.rice)."""

import dataclasses
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class RicePaths:
    """The on-disk layout of one RICE_HOME (see ARCHITECTURE.md)."""

    home: Path
    landing: Path

    @classmethod
    def from_env(cls) -> "RicePaths":
        """RICE_HOME and the landing zone the pipeline reads (`$RICE_LANDING`, default
        `RICE_HOME/landing`; its pseudonymised view when `$RICE_PSEUDONYM_KEY` is set)."""
        home = Path(os.environ.get("RICE_HOME", ".rice")).resolve()
        landing = Path(os.environ.get("RICE_LANDING", home / "landing")).resolve()
        from rice_models.pseudonyms import pseudonymised_landing  # it writes files with this module

        return cls(home=home, landing=pseudonymised_landing(home, landing))

    @property
    def lake(self) -> Path:
        return self.home / "lake"

    @property
    def catalog(self) -> Path:
        return self.home / "catalog.duckdb"

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow.db"

    @property
    def mlartifacts(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def cohort_csv(self) -> Path:
        return self.landing / "cohort.csv"

    def lake_dir(self, asset: str, partition: str = "__all__", profile: str | None = None) -> Path:
        """The lake folder of one asset partition (`__all__` for unpartitioned assets).

        Outputs that depend on a processing profile live under it, `lake/<asset>/<profile>/<partition>`,
        so `quick` and `paper` never overwrite each other; profile-independent ones (raw_scans,
        dose_maps, cohort_manifest) live in `lake/<asset>/<partition>`.

        Args:
            asset: the asset name.
            partition: the partition key.
            profile: the profile the output belongs to, or None.
        """
        return self.lake / asset / profile / partition if profile else self.lake / asset / partition


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `text` to `path` atomically (see `atomic_path`); return `path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` only if the block succeeds.

    Readers never see a half-written file, and a failure leaves nothing behind.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
