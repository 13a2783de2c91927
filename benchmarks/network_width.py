"""Training-step cost of the RICE-NET ResNet-18 by width (`widen_factor`), at the quick profile's shape.

    .venv/bin/python benchmarks/network_width.py [--widths 1.0 0.5 0.25] [--steps 10]

One Adam step (forward, cross-entropy, backward) on a random batch of 8 three-channel 32^3 volumes with
`conv1_t_stride=2`, as `fold_models` trains at the quick profile, on this process's torch threads.
Prints weights, milliseconds a step and samples per second for each width.
"""

import argparse
import time

import torch

from rice_models.network import build_network


def train_step(
    model: torch.nn.Module, optimiser: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> None:
    optimiser.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimiser.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32, 32), torch.randint(0, 2, (8,))
    for width in args.widths:
        model = build_network(3, conv1_t_stride=2, widen_factor=width)
        optimiser = torch.optim.Adam(model.parameters(), 1e-3)
        for _ in range(2):  # warm-up
            train_step(model, optimiser, x, y)
        start = time.perf_counter()
        for _ in range(args.steps):
            train_step(model, optimiser, x, y)
        seconds = (time.perf_counter() - start) / args.steps
        weights = sum(p.numel() for p in model.parameters())
        print(
            f"widen_factor {width}: {weights / 1e6:.2f} M weights, {seconds * 1000:.0f} ms a step of 8, "
            f"{8 / seconds:.1f} samples/s ({torch.get_num_threads()} threads)"
        )


if __name__ == "__main__":
    main()
