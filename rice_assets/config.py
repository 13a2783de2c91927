"""Typed run config shared by assets: which profile, and which of its settings to override."""

import dagster as dg

from rice_models.profiles import Profile, get_profile


class ProfileConfig(dg.Config):
    """Select the processing profile (`quick` or `paper`); empty means `$RICE_PROFILE`, else `quick`."""

    profile: str = ""

    def resolve(self) -> Profile:
        return get_profile(self.profile or None)


class TrainingConfig(ProfileConfig):
    """The profile plus optional overrides of its training settings (empty = the profile's own).

    Given to `cv_splits` they declare the experiment; `fold_models` trains with the declared experiment's
    settings, and overrides given to it alone make a cell of another experiment (refused by evaluation).
    """

    epochs: int | None = None
    validation_interval: int | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    conv1_t_stride: int | None = None
    widen_factor: float | None = None
    augment: bool | None = None
    train_seed: int | None = None

    def overrides(self) -> dict[str, object]:
        """The settings given in run config (those left empty are not overrides)."""
        return {
            name: value
            for name in (
                "epochs",
                "validation_interval",
                "learning_rate",
                "batch_size",
                "conv1_t_stride",
                "widen_factor",
                "augment",
                "train_seed",
            )
            if (value := getattr(self, name)) is not None
        }

    def resolve(self) -> Profile:
        return get_profile(self.profile or None, **self.overrides())
