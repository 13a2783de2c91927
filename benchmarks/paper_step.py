"""What one training step of the paper profile costs, and what the whole ablation would take.

    .venv/bin/python benchmarks/paper_step.py [--size 224] [--batch 2] [--stride 1] [--device cuda]
        [--steps 5] [--train-patients 80] [--val-patients 20] [--epochs 800]

Times, on random data of the profile's shape with three channels (the largest combination):

- the training step of `rice_models.training.train_epoch` (ResNet-18, Adam, cross-entropy; mixed
  precision on a GPU), median of `--steps` steps after two warm-up steps;
- the training augmentation of one sample (`rice_models.data.augmentation_transforms`, on the
  device, the real probabilities), mean of 10 draws;
- an evaluation forward pass of one batch;
- the peak GPU memory of training.

It then projects the time of one epoch, one cell (`--epochs`) and the 35 cells of the ablation,
assuming the GPU is the only cost (the cached data path makes file reads negligible).
"""

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from rice_models.data import IMAGE_KEY, LABEL_KEY, augmentation_transforms, plain_tensors
from rice_models.network import build_network
from rice_models.training import _autocast, deterministic, resolve_device, train_epoch

CHANNELS = ("mri_postop", "mri_event", "dose")
CELLS = 35


def timed(run: Callable[[], object], repeats: int, device: torch.device, warmup: int = 2) -> float:
    """Median seconds of `repeats` runs after `warmup` runs, synchronising the GPU."""

    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for _ in range(warmup):
        once()
    return statistics.median(once() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--stride", type=int, default=1, help="conv1_t_stride (paper: 1)")
    parser.add_argument("--device", default=None, help="default: CUDA when available")
    parser.add_argument("--no-amp", action="store_true", help="full precision on a GPU")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--train-patients", type=int, default=80)
    parser.add_argument("--val-patients", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=800)
    args = parser.parse_args()
    dev = resolve_device(args.device)
    amp = dev.type == "cuda" and not args.no_amp
    shape = (args.size,) * 3
    with deterministic(0), plain_tensors():
        model = build_network(len(CHANNELS), args.stride).to(dev)
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
        scaler = torch.amp.GradScaler(dev.type, enabled=amp)
        batch = {
            IMAGE_KEY: torch.randn(args.batch, len(CHANNELS), *shape, device=dev),
            LABEL_KEY: torch.arange(args.batch, device=dev) % 2,
        }
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        step = timed(lambda: train_epoch(model, [batch], optimiser, scaler, dev, amp), args.steps, dev)
        peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")

        def evaluate() -> None:
            model.eval()
            with torch.no_grad(), _autocast(dev, amp):
                model(batch[IMAGE_KEY])

        forward = timed(evaluate, args.steps, dev)
        augment = augmentation_transforms(CHANNELS, shape, dev if dev.type == "cuda" else None)
        sample = torch.randn(len(CHANNELS), *shape)

        def draw() -> None:
            out = sample
            for transform in augment:
                out = transform({IMAGE_KEY: out})[IMAGE_KEY]

        aug = timed(draw, 10, dev, warmup=1)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    epoch = args.train_patients / args.batch * step + args.train_patients * aug
    epoch += args.val_patients / args.batch * forward
    print(f"device {dev} ({name}), torch {torch.__version__}, mixed precision {amp}")
    print(f"shape {args.size}^3 x {len(CHANNELS)} channels, batch {args.batch}, conv1 stride {args.stride}")
    print(f"  training step        {step:8.3f} s   ({args.batch / step:.1f} samples/s)")
    print(f"  augmentation/sample  {aug:8.3f} s")
    print(f"  eval forward/batch   {forward:8.3f} s")
    print(f"  peak GPU memory      {peak:8.2f} GiB (training)")
    print(f"projection ({args.train_patients} training + {args.val_patients} validation patients):")
    print(f"  one epoch            {epoch:8.1f} s")
    print(f"  one cell, {args.epochs} epochs {epoch * args.epochs / 3600:8.2f} h")
    print(f"  {CELLS} cells             {epoch * args.epochs * CELLS / 3600:8.1f} h")


if __name__ == "__main__":
    main()
