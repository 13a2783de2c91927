"""The RICE-NET classifier: MONAI's ResNet-18 with one input channel per image of the combination.

Randomly initialised (no pretrained weights: nothing is downloaded). Two outputs, class indices as in
`rice_models.labels.LABELS` (0 = recurrence, 1 = RICE); the network returns logits.
"""

from monai.networks.nets import ResNet, resnet18

NUM_CLASSES = 2


def build_network(
    n_input_channels: int,
    conv1_t_stride: int = 1,
    widen_factor: float = 1.0,
    spatial_dims: int = 3,
    num_classes: int = NUM_CLASSES,
) -> ResNet:
    """MONAI `resnet18` for early-fused channels.

    Args:
        n_input_channels: number of stacked channels (1-3 for the seven combinations).
        conv1_t_stride: stride of the first convolution (1 = MONAI's default; 2 = ~8x cheaper in 3D).
        widen_factor: multiplier of the block widths (MONAI `ResNet(widen_factor=...)`; 1.0 = the study's
            64-128-256-512 channels). The 18-layer architecture is the same at any width; the cost of a
            step falls with about the square of the factor (0.25: ~14x faster on 2 CPU cores at 32^3).
        spatial_dims: number of spatial dimensions of the input (3 for volumes).
        num_classes: number of output logits.

    Raises:
        ValueError: a non-positive channel count, stride or width, spatial_dims not in 1-3, fewer than
            2 classes.
    """
    if n_input_channels < 1:
        raise ValueError(f"n_input_channels must be at least 1, got {n_input_channels}")
    if conv1_t_stride < 1:
        raise ValueError(f"conv1_t_stride must be at least 1, got {conv1_t_stride}")
    if not widen_factor > 0 or int(64 * widen_factor) < 1:
        raise ValueError(f"widen_factor must give at least one channel per block, got {widen_factor}")
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    return resnet18(
        pretrained=False,
        spatial_dims=spatial_dims,
        n_input_channels=n_input_channels,
        num_classes=num_classes,
        conv1_t_stride=conv1_t_stride,
        widen_factor=widen_factor,
    )
