"""The label vocabulary: one definition, one order, imported everywhere a label or class index appears.

`LABELS[i]` is the label of class index `i`: 0 = `recurrence`, 1 = `rice`. RICE (radiation-induced
contrast enhancement) is the positive class, so a probability is always P(RICE) = P(class 1). cohort.csv,
the catalog, the splits, the data path, the network's two logits, the metrics and the plots all use this
order. This module imports nothing heavy (the catalog, which never imports torch, reads it too).
"""

LABELS: tuple[str, ...] = ("recurrence", "rice")
"""Class index -> label."""
RICE_LABEL = "rice"
RICE_INDEX = LABELS.index(RICE_LABEL)
"""Class index of RICE, the positive class (1)."""
CLASS_INDICES: tuple[int, ...] = tuple(range(len(LABELS)))
"""The class indices (0, 1)."""


def label_index(label: str | int) -> int:
    """The class index of a label: `recurrence` -> 0, `rice` -> 1 (indices pass through).

    Args:
        label: a label of `LABELS` or a class index.

    Raises:
        ValueError: unknown label or index.
    """
    if isinstance(label, str):
        if label not in LABELS:
            raise ValueError(f"unknown label {label!r}; expected one of {list(LABELS)}")
        return LABELS.index(label)
    if int(label) not in CLASS_INDICES:
        raise ValueError(f"class index {label!r} out of range 0..{len(LABELS) - 1}")
    return int(label)


def label_name(index: int) -> str:
    """The label of a class index: 0 -> `recurrence`, 1 -> `rice`.

    Args:
        index: a class index.

    Raises:
        ValueError: an index outside `CLASS_INDICES`.
    """
    if int(index) not in CLASS_INDICES:
        raise ValueError(f"class index {index!r} out of range 0..{len(LABELS) - 1}")
    return LABELS[int(index)]
