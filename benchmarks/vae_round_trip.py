"""What a base's VAE keeps of the demo product's real defects, over several seeds of the product.

Every image SeaS generates is decoded by the base's VAE, so a defect its round trip loses cannot
be generated. For each seed, :class:`seas.judge.vae_probe.VaeProbe` writes the demo's synthetic
product in memory (4 training and 50 held-out anomalies per type), fits the type classifier on
the training ones, and reads the held-out anomalies before and after the round trip
(encode -> mean latent -> decode).

    OMP_NUM_THREADS=2 python -m benchmarks.vae_round_trip --base seas-tiny --seeds 0 1 2
"""

from __future__ import annotations

import argparse

import numpy as np

from seas.judge.vae_probe import VaeProbe
from seas.model.backbone import load_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="seas-tiny", help="any --base (default: the shipped seas-tiny)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    vae = load_backbone(args.base).vae.eval()
    lines = ["| product seed | originals: type fidelity | round trip: type fidelity | ratio | PSNR (dB) | per type |",
             "| --- | --- | --- | --- | --- | --- |"]
    ratios = []
    for seed in args.seeds:
        probe = VaeProbe(seed=seed, size=args.size)
        original, trip = probe.originals(), probe.measure(vae)
        ratio = trip["type_fidelity"] / original["type_fidelity"]
        ratios.append(ratio)
        per = ", ".join(f"{k} {v:.2f} ({original['per_type'][k]:.2f})" for k, v in trip["per_type"].items())
        lines.append(f"| {seed} | {original['type_fidelity']:.2f} | {trip['type_fidelity']:.2f} | {ratio:.3f} | "
                     f"{trip['psnr']:.1f} | {per} |")
    lines.append(f"| mean | | | {np.mean(ratios):.3f} | | (per type: round trip (originals)) |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
