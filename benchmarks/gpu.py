"""The GPU path, measured: one script, a few minutes on a CUDA machine, one JSON result.

    .venv/bin/python benchmarks/gpu.py [--device cuda] [--shapes quick paper] [--out FILE.json]
    .venv/bin/python benchmarks/gpu.py --device cpu --shapes quick        # what runs on a CPU machine

For each profile shape (`quick`: 32³, batch 8, stride 2, width 0.25; `paper`: 224³, batch 2, stride 1,
full width; three channels, the largest combination), on random data of that shape:

- training samples/s and peak memory (GPU: `max_memory_allocated`; CPU: the process's peak RSS, which only
  grows) for each variant: `fp32`; `bf16` (autocast bfloat16, no gradient scaler); `bf16+channels_last`
  (model and batch in `torch.channels_last_3d`); `bf16+channels_last+compile` (`torch.compile`);
- the training augmentation (`rice_models.data.augmentation_transforms`, the real probabilities) per
  sample on the CPU, and on the device for a whole batch (the batch's samples on the device, the same
  random transforms per sample: MONAI's transforms draw per sample);
- the data-loader stall fraction: the share of an epoch's wall time the training loop waits for the next
  batch when augmentation runs on the CPU in `--loader-workers` loader processes;
- occlusion seconds per map: `rice_models.occlusion.occlusion_map` of a 5-fold ensemble of the shape's
  network, all channels, at the profile's mask size and overlap (above `--occlusion-max-windows`
  windows, a coarser map is timed and scaled by the window count: one forward pass per window);
- the projected device-hours of the whole paper protocol (35 cells × `--epochs` epochs of
  `--train-patients` + `--val-patients` patients, plus occlusion of `--test-patients` × 4 maps): with the
  fastest variant and augmentation on the device. Computed only for the `paper` shape (at the quick shape
  the projection would not be the paper protocol's). Goal on an H100: at most 24 hours.
"""

import argparse
import json
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rice_models.data import IMAGE_KEY, augmentation_transforms, plain_tensors
from rice_models.network import build_network
from rice_models.occlusion import n_windows, occlusion_map
from rice_models.profiles import get_profile
from rice_models.training import deterministic, resolve_device

CHANNELS = ("mri_postop", "mri_event", "dose")
CELLS = 35
VARIANTS = ("fp32", "bf16", "bf16+channels_last", "bf16+channels_last+compile")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], object], repeats: int, device: torch.device, warmup: int = 2) -> float:
    """Median seconds of `repeats` runs after `warmup` runs."""
    times = []
    for index in range(warmup + repeats):
        sync(device)
        start = time.perf_counter()
        run()
        sync(device)
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def training_step(
    variant: str, shape: tuple[int, ...], batch: int, stride: int, width: float, dev: torch.device
):
    """A closure doing one optimiser step of the variant on a random batch."""
    model: nn.Module = build_network(len(CHANNELS), stride, width).to(dev)
    images = torch.randn(batch, len(CHANNELS), *shape, device=dev)
    labels = torch.arange(batch, device=dev) % 2
    if "channels_last" in variant:
        model = model.to(memory_format=torch.channels_last_3d)
        images = images.contiguous(memory_format=torch.channels_last_3d)
    forward = torch.compile(model) if "compile" in variant else model
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    bf16 = variant.startswith("bf16")

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(forward(images), labels)
        loss.backward()
        optimiser.step()

    model.train()
    return step


def measure_training(shape, batch, stride, width, dev, steps, variants) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for variant in variants:
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        try:
            step = training_step(variant, shape, batch, stride, width, dev)
            seconds = timed(step, steps, dev, warmup=3 if "compile" in variant else 2)
            results[variant] = {
                "step_s": seconds,
                "samples_per_s": batch / seconds,
                "peak_memory_gib": peak_memory_gib(dev),
            }
        except Exception as err:  # noqa: BLE001 - a variant the platform lacks is reported, not fatal
            results[variant] = {"error": f"{type(err).__name__}: {err}"[:300]}
        print(f"  {variant:28s} {results[variant]}", flush=True)
    return results


def measure_augmentation(shape, batch, dev, repeats: int) -> dict[str, float]:
    sample = torch.randn(len(CHANNELS), *shape)

    def run(chain: list[Any], samples: list[torch.Tensor]) -> None:
        for image in samples:
            out = image
            for transform in chain:
                out = transform({IMAGE_KEY: out})[IMAGE_KEY]

    cpu_chain = augmentation_transforms(CHANNELS, shape, None)
    cpu = timed(lambda: run(cpu_chain, [sample]), repeats, torch.device("cpu"), warmup=1)
    result = {"cpu_s_per_sample": cpu}
    if dev.type != "cpu":
        device_chain = augmentation_transforms(CHANNELS, shape, dev)
        on_device = [sample.to(dev) for _ in range(batch)]
        seconds = timed(lambda: run(device_chain, on_device), repeats, dev, warmup=1)
        result["device_s_per_sample"] = seconds / batch
    return result


class _Augmented(torch.utils.data.Dataset):
    def __init__(self, shape: tuple[int, ...], n: int) -> None:
        self.chain = augmentation_transforms(CHANNELS, shape, None)
        self.data = [torch.randn(len(CHANNELS), *shape) for _ in range(min(n, 8))]
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        out = self.data[index % len(self.data)]
        for transform in self.chain:
            out = transform({IMAGE_KEY: out})[IMAGE_KEY]
        return torch.as_tensor(out)


def measure_stall(shape, batch, stride, width, dev, workers: int, batches: int) -> dict[str, float]:
    """Share of wall time spent waiting for batches (CPU augmentation in `workers` processes)."""
    step = training_step("bf16" if dev.type == "cuda" else "fp32", shape, batch, stride, width, dev)
    loader = torch.utils.data.DataLoader(
        _Augmented(shape, batch * batches), batch_size=batch, num_workers=workers, persistent_workers=False
    )
    waiting = 0.0
    start = time.perf_counter()
    iterator = iter(loader)
    for _ in range(batches):
        before = time.perf_counter()
        images = next(iterator).to(dev)
        waiting += time.perf_counter() - before
        del images
        step()
        sync(dev)
    total = time.perf_counter() - start
    return {"stall_fraction": waiting / total, "epoch_s": total, "batches": batches, "workers": workers}


def measure_occlusion(shape, stride, width, profile, dev, max_windows: int) -> dict[str, Any]:
    """Seconds of one occlusion map at the profile's mask size and overlap.

    A map costs one ensemble forward pass per window, so where the profile's map has more than
    `max_windows` windows (the paper shape: 2,744), a coarser map (a larger mask, same image and
    ensemble) is timed and its seconds per window are multiplied by the profile's window count.
    """

    class Ensemble(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.folds = nn.ModuleList(build_network(len(CHANNELS), stride, width) for _ in range(5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([f(x).softmax(1)[:, 1] for f in self.folds]).mean(0)

    model = Ensemble().to(dev).eval()
    image = torch.randn(len(CHANNELS), *shape)
    mask, overlap = profile.occlusion_mask_size, profile.occlusion_overlap
    windows = n_windows(shape, mask, overlap)
    timed_mask = mask
    while n_windows(shape, timed_mask, overlap) > max_windows:
        timed_mask *= 2
    timed_windows = n_windows(shape, timed_mask, overlap)
    start = time.perf_counter()
    occlusion_map(model, image, mask_size=timed_mask, overlap=overlap)
    sync(dev)
    seconds = time.perf_counter() - start
    return {
        "s_per_map": seconds * windows / timed_windows,
        "windows": windows,
        "timed_windows": timed_windows,
        "timed_mask_size": timed_mask,
        "timed_s": seconds,
        "extrapolated": timed_windows != windows,
    }


def project_hours(result: dict[str, Any], args: argparse.Namespace, batch: int) -> dict[str, Any]:
    """Device-hours of the paper protocol from the measured figures (fastest variant, device augmentation)."""
    rates = {v: r["step_s"] for v, r in result["training"].items() if "step_s" in r}
    variant = min(rates, key=rates.__getitem__)
    augment = result["augmentation"].get("device_s_per_sample", result["augmentation"]["cpu_s_per_sample"])
    forward = rates[variant] / 3  # an evaluation forward pass: about a third of a training step
    epoch = args.train_patients / batch * rates[variant] + args.train_patients * augment
    epoch += args.val_patients / batch * forward
    occlusion = result["occlusion"]["s_per_map"] * 4 * args.test_patients  # all channels + one per channel
    hours = (CELLS * args.epochs * epoch + occlusion) / 3600
    return {"variant": variant, "epoch_s": epoch, "cell_h": epoch * args.epochs / 3600, "total_h": hours}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default=None, help="default: CUDA when available")
    parser.add_argument("--shapes", nargs="+", default=["quick", "paper"], choices=["quick", "paper"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--loader-workers", type=int, default=4)
    parser.add_argument("--stall-batches", type=int, default=8)
    parser.add_argument("--train-patients", type=int, default=80)
    parser.add_argument("--val-patients", type=int, default=20)
    parser.add_argument("--test-patients", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=800)
    parser.add_argument(
        "--fast-kernels", action="store_true", help="cuDNN autotuning instead of deterministic kernels"
    )
    parser.add_argument("--occlusion-max-windows", type=int, default=128, help="above: time a coarser map")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu.json"))
    args = parser.parse_args()
    dev = resolve_device(args.device)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "kernels": "cudnn.benchmark" if args.fast_kernels else "deterministic",
        "shapes": {},
    }
    for name in args.shapes:
        profile = get_profile(name)
        shape, batch = tuple(profile.shape), profile.batch_size
        stride, width = profile.conv1_t_stride, profile.widen_factor
        print(f"{name}: {shape} x {len(CHANNELS)} channels, batch {batch}, stride {stride}, width {width}")
        result: dict[str, Any] = {"shape": shape, "batch": batch, "stride": stride, "width": width}
        report["shapes"][name] = result
        with kernels(args.fast_kernels), plain_tensors():
            result["training"] = measure_training(shape, batch, stride, width, dev, args.steps, args.variants)
            save(report, args.out)
            result["augmentation"] = measure_augmentation(shape, batch, dev, repeats=3)
            print(f"  augmentation {result['augmentation']}", flush=True)
            save(report, args.out)
            workers = args.loader_workers
            result["loader"] = measure_stall(shape, batch, stride, width, dev, workers, args.stall_batches)
            print(f"  loader {result['loader']}", flush=True)
            max_windows = args.occlusion_max_windows
            result["occlusion"] = measure_occlusion(shape, stride, width, profile, dev, max_windows)
            print(f"  occlusion {result['occlusion']}", flush=True)
            if name == "paper":
                result["projection"] = project_hours(result, args, batch)
                print(f"  projection {result['projection']}", flush=True)
            save(report, args.out)
    print(f"wrote {args.out}")


def save(report: dict[str, Any], out: Path) -> None:
    """Write the report so far: a run cut off by a time limit keeps what it measured."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


@contextmanager
def kernels(fast: bool) -> Iterator[None]:
    """The training code's deterministic kernels, or (`fast`) cuDNN's autotuned, non-deterministic ones."""
    if not fast:
        with deterministic(0):
            yield
        return
    torch.manual_seed(0)
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


if __name__ == "__main__":
    main()
