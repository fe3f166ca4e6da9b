"""What the bootstrap's VAE lets the tiny base draw, against its number of updates.

Every image SeaS generates is decoded by the base's VAE, so a defect the VAE cannot reconstruct
cannot be generated, whatever the U-Net and stage 1 learn. This trains the bootstrap's VAE
exactly as ``seas bootstrap`` does (same images, generic defects, seed and settings) and, at each
checkpoint, round-trips the held-out real test images through it (encode -> mean latent ->
decode) and measures:

* ``l1``: mean absolute reconstruction error over the test images, in [0, 1] grey units;
* ``type_fidelity``: share of the round-tripped real test anomalies that the type classifier
  (trained on the real training anomalies and normal images, as the evaluation's) names as their
  type, cropped around their true mask; the same on the original images is the ceiling
  (``originals`` row). This is an upper bound for the type fidelity of generated pairs;
* ``good_rate``: share of the round-tripped anomalies the classifier reads as normal.

It writes ``curve.json``, ``curve.md`` and ``reconstructions.png`` (rows: originals, then one row
per checkpoint) into ``--out``::

    OMP_NUM_THREADS=1 python -m benchmarks.bootstrap_vae_curve --out /tmp/vae-curve --checkpoints 120 240 480
    OMP_NUM_THREADS=1 python -m benchmarks.bootstrap_vae_curve --out /tmp/vae-grad --set vae_gradient_weight=1
    OMP_NUM_THREADS=1 python -m benchmarks.bootstrap_vae_curve --out /tmp/vae-curve-mt --data examples/magnetic-tile.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import with_settings
from seas.cli.demo import DemoConfig, write_demo_product
from seas.data.config import DataConfig
from seas.data.readers import GOOD, read_dataset
from seas.data.split import few_shot_split
from seas.data.transforms import image_to_tensor
from seas.files.images import read_mask, read_rgb, resize_image, resize_mask
from seas.judge.classifier import TypeClassifier
from seas.judge.measures import type_fidelity
from seas.model.backbone import build_tiny_components
from seas.training.bootstrap import BootstrapConfig, defect_pool, normal_training_images, train_vae

SHEET_IMAGES = 6  # test anomalies shown per row of reconstructions.png


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, R, R) in [-1, 1] -> (N, R, R, 3) uint8."""
    return ((x.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


def reading(classifier: TypeClassifier, images: np.ndarray, masks: list[np.ndarray], types: list[str]) -> dict:
    """Type fidelity and good rate of ``images`` (N, R, R, 3) cropped around ``masks``."""
    result = type_fidelity(classifier, {t: [(im, m) for im, m, k in zip(images, masks, types) if k == t]
                                        for t in classifier.types if t in types})
    rates = [v["good_rate"] for k, v in result["per_type"].items() if k != GOOD]
    return {"type_fidelity": result["accuracy"], "good_rate": float(np.mean(rates)),
            "per_type": {k: v["accuracy"] for k, v in result["per_type"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", default=None, help="a dataset description (YAML); default: the demo's synthetic product")
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[120, 240, 480], help="VAE updates to measure at")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="bootstrap settings other than the demo's (e.g. vae_gradient_weight=1 vae_width=32)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    demo = DemoConfig(seed=args.seed)
    data_cfg = DataConfig.from_yaml(args.data) if args.data else write_demo_product(args.out / "data", demo)
    size = demo.resolution
    cfg = BootstrapConfig(resolution=size, generic_defects=0.5, seed=args.seed)  # the old demo's bootstrap
    cfg = dataclasses.replace(with_settings(cfg, args.set, parser.error), vae_steps=max(args.checkpoints))

    split = few_shot_split(read_dataset(data_cfg), data_cfg)
    image_at = lambda s: resize_image(read_rgb(s.image), size)  # noqa: E731  (R, R, 3) uint8
    mask_at = lambda s: resize_mask(read_mask(s.mask, data_cfg.mask_rule), size)  # noqa: E731  (R, R) bool
    real = {t: [(image_at(s), mask_at(s)) for s in v] for t, v in split.train.items()}
    classifier = TypeClassifier().fit(real, [image_at(s) for s in split.normal_train], seed=args.seed, steps=300)
    tests = [s for s in split.test if not s.is_normal]
    test_images = torch.stack([image_to_tensor(read_rgb(s.image), size) for s in tests])  # (T, 3, R, R)
    test_masks, test_types = [mask_at(s) for s in tests], [s.type for s in tests]
    shown = slice(None, None, max(len(tests) // SHEET_IMAGES, 1))  # about SHEET_IMAGES spread over the types
    rows = {"originals": {"updates": 0, "l1": 0.0, **reading(classifier, to_uint8(test_images), test_masks, test_types)}}
    sheet = [to_uint8(test_images[shown][:SHEET_IMAGES])]

    vae = build_tiny_components(seed=args.seed, width=cfg.width, vae_width=cfg.vae_width,
                                latent_channels=cfg.latent_channels, vae_factor=cfg.vae_factor)["vae"]
    images, _, weights = defect_pool(normal_training_images(data_cfg, cfg), cfg, data_cfg.product_name)
    start = time.perf_counter()

    def measure(update: int) -> None:
        if update not in args.checkpoints:
            return
        with torch.no_grad():
            recon = torch.cat([vae.decode(vae.encode(chunk).latent_dist.mean).sample for chunk in test_images.split(16)])
        recon = recon.clamp(-1, 1)
        rows[f"{update} updates"] = {"updates": update, "seconds": round(time.perf_counter() - start, 1),
                                     "l1": float((recon - test_images).abs().mean() / 2),
                                     **reading(classifier, to_uint8(recon), test_masks, test_types)}
        sheet.append(to_uint8(recon[shown][:SHEET_IMAGES]))
        print(f"{update} updates: {rows[f'{update} updates']}", flush=True)

    train_vae(vae, images, cfg, weights, after_update=measure)
    Image.fromarray(np.concatenate([np.concatenate(list(r), 1) for r in sheet], 0)).save(args.out / "reconstructions.png")
    (args.out / "curve.json").write_text(json.dumps({"data": args.data or "synthetic", "seed": args.seed,
                                                     "bootstrap": dataclasses.asdict(cfg),
                                                     "test_anomalies": len(tests), "rows": rows}, indent=1))
    lines = ["| VAE | updates | seconds | L1 | type fidelity | read as normal |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {r['updates']} | {r.get('seconds', '-')} | {r['l1']:.3f} | {r['type_fidelity']:.2f} | "
              f"{r['good_rate']:.2f} |" for name, r in rows.items()]
    (args.out / "curve.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
