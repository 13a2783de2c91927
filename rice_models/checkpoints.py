"""Fold-model checkpoints in the lake: the selected weights plus what rebuilds the network.

MLflow holds the registered copy; the lake copy lets evaluation and occlusion run from files with
checksums recorded in the catalog, without a tracking server.
"""

from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import ResNet

from rice_models.network import build_network
from rice_models.paths import atomic_path


def save_checkpoint(
    path: Path, state_dict: dict[str, torch.Tensor], channels: tuple[str, ...], conv1_t_stride: int
) -> Path:
    """Write weights, channels and stride atomically; return `path`."""
    payload: dict[str, Any] = {
        "state_dict": state_dict,
        "channels": list(channels),
        "conv1_t_stride": conv1_t_stride,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: Path) -> tuple[ResNet, tuple[str, ...]]:
    """The network of a checkpoint, on the CPU in evaluation mode, and its input channels.

    Raises:
        FileNotFoundError: no checkpoint at `path`.
    """
    payload = torch.load(path, map_location="cpu", weights_only=True)
    channels = tuple(payload["channels"])
    model = build_network(len(channels), int(payload["conv1_t_stride"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval(), channels
