"""Typed run config shared by assets: which profile, and which of its settings to override."""

import dagster as dg

from rice_models.profiles import Profile, get_profile


class ProfileConfig(dg.Config):
    """Select the processing profile (`quick` or `paper`); empty means `$RICE_PROFILE`, else `quick`."""

    profile: str = ""

    def resolve(self) -> Profile:
        return get_profile(self.profile or None)
