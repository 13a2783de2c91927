"""Input channels of the network: the seven combinations of the ablation and their fixed order.

A combination key names the channels it feeds to the network (`postop+dose` = post-op T1c MRI and
the dose map). Whatever the key, channels are always stacked in the order of `CHANNEL_ORDER`
(mri_postop, mri_event, dose), so channel 0 of a `postop+event+dose` model is always the post-op
scan and a model's first convolution sees the same channel layout in every fold.
"""

from pathlib import Path

CHANNEL_ORDER: tuple[str, ...] = ("mri_postop", "mri_event", "dose")
"""Channel files of `registered_volumes`, in the order they are concatenated."""

MRI_CHANNELS: tuple[str, ...] = ("mri_postop", "mri_event")
DOSE_CHANNEL = "dose"
VOLUME_SUFFIX = ".nii.gz"

_SHORT_NAMES: dict[str, str] = {"postop": "mri_postop", "event": "mri_event", "dose": "dose"}

COMBINATIONS: tuple[str, ...] = (
    "postop",
    "event",
    "dose",
    "postop+event",
    "postop+dose",
    "event+dose",
    "postop+event+dose",
)
"""The seven combination keys of the ablation (the `combination` partition keys)."""

DEFAULT_N_FOLDS = 5


def fold_keys(n_folds: int = DEFAULT_N_FOLDS) -> tuple[str, ...]:
    """The fold partition keys `"0"`..`str(n_folds - 1)`.

    Args:
        n_folds: number of cross-validation folds (at least 2).

    Raises:
        ValueError: fewer than 2 folds.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    return tuple(str(i) for i in range(n_folds))


FOLDS: tuple[str, ...] = fold_keys()
"""The fold keys of the default 5-fold cross-validation."""


def channels_of(combination: str) -> tuple[str, ...]:
    """The channel files of a combination, in the fixed order of `CHANNEL_ORDER`.

    Args:
        combination: one of `COMBINATIONS`, e.g. `"postop+dose"`.

    Raises:
        ValueError: the key is not one of the seven combinations.
    """
    if combination not in COMBINATIONS:
        raise ValueError(f"unknown channel combination {combination!r}; expected one of {list(COMBINATIONS)}")
    wanted = {_SHORT_NAMES[part] for part in combination.split("+")}
    return tuple(channel for channel in CHANNEL_ORDER if channel in wanted)


def combination_of(channels: tuple[str, ...] | list[str]) -> str:
    """The combination key of a set of channel files (the inverse of `channels_of`).

    Args:
        channels: channel file names, e.g. `("mri_postop", "dose")`, in any order.

    Raises:
        ValueError: a name is not a channel, or the set is empty or repeats a channel.
    """
    unknown = sorted(set(channels) - set(CHANNEL_ORDER))
    if unknown or not channels or len(set(channels)) != len(channels):
        raise ValueError(f"invalid channel set {list(channels)}; expected distinct names of {CHANNEL_ORDER}")
    short = {full: key for key, full in _SHORT_NAMES.items()}
    return "+".join(short[channel] for channel in CHANNEL_ORDER if channel in channels)


def channel_paths(patient_dir: Path, combination: str) -> dict[str, Path]:
    """The NIfTI files of one patient's `registered_volumes` folder that a combination reads.

    Args:
        patient_dir: `<lake>/registered_volumes/<patient_id>`.
        combination: one of `COMBINATIONS`.

    Raises:
        ValueError: unknown combination.
    """
    return {channel: Path(patient_dir) / f"{channel}{VOLUME_SUFFIX}" for channel in channels_of(combination)}
