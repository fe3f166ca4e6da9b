"""One optimizer update, by implementation, on the same parameters and gradients.

The profiler (``bench_profiles --trace``) shows the optimizer update as the largest single
cost of a stage-1 step on a CPU. This compares torch's AdamW kernels (per-parameter loop,
multi-tensor "foreach", which torch picks by default, and "fused", which seas uses where
available) with bitsandbytes' 8-bit AdamW (the reference's optimizer), and prints the
seconds per update, the optimizer-state bytes per parameter, and each one's ratio to fused.

    python -m benchmarks.bench_optimizer [--millions 100] [--device cpu]

The default 100 M parameters (100 matrices of 1000 x 1000) scale linearly to SD's 860 M U-Net.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import torch


def seconds_per_update(optimizer, device: torch.device, repeats: int) -> float:
    optimizer.step()  # first update allocates the states
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def state_bytes(optimizer) -> int:
    return sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
               if torch.is_tensor(v))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--millions", type=int, default=100, help="parameters, in millions (default 100)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(1000, 1000, device=device)) for _ in range(args.millions)]
    for p in params:
        p.grad = torch.randn_like(p)
    kinds = {"AdamW, per-parameter loop": lambda: torch.optim.AdamW(params, lr=1e-4, foreach=False),
             "AdamW, foreach (torch default)": lambda: torch.optim.AdamW(params, lr=1e-4, foreach=True),
             "AdamW, fused (seas)": lambda: torch.optim.AdamW(params, lr=1e-4, fused=True)}
    if importlib.util.find_spec("bitsandbytes") is not None:
        import bitsandbytes as bnb

        kinds["8-bit AdamW (bitsandbytes, reference)"] = lambda: bnb.optim.AdamW8bit(params, lr=1e-4)
    results = {}
    for name, make in kinds.items():
        optimizer = make()
        results[name] = (seconds_per_update(optimizer, device, args.repeats), state_bytes(optimizer))
        del optimizer
    fused = results["AdamW, fused (seas)"][0]
    n = sum(p.numel() for p in params)
    print(f"device {device}  {n / 1e6:.0f} M parameters  threads {torch.get_num_threads()}")
    print(f"{'optimizer':<40}{'s/update':>10}{'state B/param':>15}{'time / fused':>14}")
    for name, (seconds, nbytes) in results.items():
        print(f"{name:<40}{seconds:>10.3f}{nbytes / n:>15.2f}{seconds / fused:>14.2f}")


if __name__ == "__main__":
    main()
