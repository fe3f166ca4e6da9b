"""``seas demo``: the whole pipeline on a CPU in minutes, with no model weights.

1. data: a synthetic product (MVTec layout) written from a seed, or the user's ``--data``;
2. bootstrap: a tiny SD-1.x-shaped model trained briefly on the product's normal images
   (the stand-in for Stable Diffusion's pretraining);
3. stage 1 and stage 2 on that base;
4. generation of every type, normal images and one mixture of two types;
5. evidence that it learned, on the held-out real test split: attention-map localisation and
   the mask head's masks on real images;
6. the downstream evaluation (real only vs real + generated vs classic baselines) and
   ``report.html``.

The demo's settings differ from the paper's where a tiny model and minutes of CPU demand it
(resolution 128, a few hundred updates, higher learning rates): they are in :class:`DemoConfig`
and recorded in the report. It shows the pipeline, its outputs and its measurements working
end to end; it cannot show Stable Diffusion's image quality.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from seas.training.bootstrap import BootstrapConfig, bootstrap_backbone
from seas.config import MaskConfig, TrainConfig
from seas.data.config import DataConfig
from seas.errors import RunError

DEMO_MARKER = "demo.json"


@dataclass
class DemoConfig:
    resolution: int = 128
    seed: int = 0
    # synthetic product (when no --data is given)
    n_train_good: int = 60
    n_test_good: int = 20
    n_per_type: int = 12
    # bootstrap of the tiny base model
    vae_steps: int = 120
    unet_steps: int = 250
    # stage 1 (a tiny model trained for minutes needs larger steps than SD's 4e-6 / 4e-5)
    train_steps: int = 400
    lr_unet: float = 2e-4
    lr_text: float = 2e-3
    # stage 2
    mask_head_updates: int = 80
    # generation
    num_per_kind: int = 12
    sample_steps: int = 20
    # downstream evaluation (a small U-Net segmenter at 96 px: four trainings fit in ~2 minutes)
    segmenter: str = "unet"
    seg_steps: int = 150
    seg_size: int = 96
    seg_width: float = 0.25

    @classmethod
    def quick(cls) -> "DemoConfig":
        """A shortened demo for the test suite: every stage, far fewer steps, 64 px."""
        return cls(resolution=64, n_train_good=8, n_test_good=4, n_per_type=4, vae_steps=4, unet_steps=4,
                   train_steps=3, mask_head_updates=2, num_per_kind=2, sample_steps=3, seg_steps=4, seg_size=64)


class StageClock:
    """Wall time of each named stage, printed as it finishes."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 1)
        print(f"== {name}: {self.seconds[name]:.1f} s", flush=True)


def prepare_out(out: Path) -> None:
    """A new folder, or the folder of a previous demo (replaced); anything else is refused."""
    if out.exists():
        if not (out / DEMO_MARKER).is_file():
            if any(out.iterdir()):
                raise RunError(f"--out {out}: not empty and not a previous demo; choose a new folder")
        else:
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def run_demo(out: str | Path, cfg: DemoConfig, data_cfg: DataConfig | None = None) -> dict:
    """Run every stage into ``out``; return the metrics written to ``out/evaluation``."""
    from seas.data.synthetic import write_synthetic_product
    from seas.evaluation.evaluate import EvalConfig, evaluate_run
    from seas.evaluation.localisation import attention_localisation, mask_head_localisation
    from seas.generation.folder import generate_to_folder
    from seas.run import Run
    from seas.training.stage1 import train_generator
    from seas.training.stage2 import train_mask_head

    out = Path(out).resolve()
    prepare_out(out)
    clock = StageClock()
    with clock.stage("data"):
        if data_cfg is None:
            root = write_synthetic_product(out / "data", product="tile", seed=cfg.seed, size=cfg.resolution,
                                           n_train_good=cfg.n_train_good, n_test_good=cfg.n_test_good,
                                           n_per_type=cfg.n_per_type)
            data_cfg = DataConfig(root=str(root), layout="mvtec")
    with clock.stage("bootstrap base model"):
        boot = BootstrapConfig(resolution=cfg.resolution, vae_steps=cfg.vae_steps,
                               unet_steps=cfg.unet_steps, seed=cfg.seed)
        base = bootstrap_backbone(data_cfg, boot, out / "base")
    run_dir = out / "run"
    with clock.stage("stage 1: SeaS fine-tuning"):
        train_cfg = TrainConfig(base=str(base), resolution=cfg.resolution, steps=cfg.train_steps, grad_accum=1,
                                lr_unet=cfg.lr_unet, lr_text=cfg.lr_text, seed=cfg.seed,
                                checkpoint_every=max(cfg.train_steps // 2, 1))
        train_generator(data_cfg, train_cfg, run_dir)
    with clock.stage("stage 2: mask head"):
        train_mask_head(run_dir, MaskConfig(steps=cfg.mask_head_updates, grad_accum=1, timesteps="low", seed=cfg.seed,
                                            checkpoint_every=max(cfg.mask_head_updates // 2, 1)))
    run = Run.load(run_dir)
    kinds = [*run.types, "good"] + (["+".join(run.types[:2])] if len(run.types) > 1 else [])
    with clock.stage("generation"):
        generate_to_folder(run_dir, run_dir / "generated", kinds, num=cfg.num_per_kind, seed=cfg.seed,
                           steps=cfg.sample_steps, device="cpu")
    with clock.stage("evidence on held-out real images"):
        backbone = run.load_backbone()
        evidence = (attention_localisation(run, backbone, run.split.test)
                    | mask_head_localisation(run, backbone, run.load_mask_head(), run.split.test))
    with clock.stage("downstream evaluation"):
        eval_cfg = EvalConfig(segmenter=cfg.segmenter, size=cfg.seg_size, steps=cfg.seg_steps, width=cfg.seg_width,
                              seed=cfg.seed, device="cpu", quality=False)
        extra = {
            "Evidence of learning (held-out real test split)": evidence,
            "Demo settings": dataclasses.asdict(cfg),
        }
        metrics = evaluate_run(run_dir, run_dir / "generated", out / "evaluation", eval_cfg, extra=extra)
    metrics["stage_seconds"] = clock.seconds
    (out / DEMO_MARKER).write_text(json.dumps({"config": dataclasses.asdict(cfg), "stage_seconds": clock.seconds,
                                               "evidence": evidence}, indent=1))
    print_summary(out, metrics, evidence, clock.seconds)
    return metrics


def print_summary(out: Path, metrics: dict, evidence: dict, seconds: dict) -> None:
    print()
    print(f"attention-map pixel AUROC on held-out real anomalies: {evidence['attention_pixel_auroc']:.3f}")
    print(f"mask head on held-out real images: pixel AUROC {evidence['mask_head_pixel_auroc']:.3f}, "
          f"pixel AP {evidence['mask_head_pixel_ap']:.3f}")
    downstream = metrics.get("downstream", {})
    for name, values in downstream.items():
        print(f"downstream {name:<16} pixel AP {values.get('pixel_ap', float('nan')):.3f}  IoU {values.get('iou', float('nan')):.3f}")
    print("stage timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + f"; total {sum(seconds.values()):.0f} s")
    print(f"report: {out / 'evaluation' / 'report.html'}")


def add_parsers(sub) -> None:
    from seas.cli.options import add_data_args

    p = sub.add_parser("demo", help="the whole pipeline on a CPU in minutes (synthetic product or --data)",
                       description="Write a synthetic product (or read --data), bootstrap a tiny base model, run "
                       "stage 1 and stage 2, generate every type, normal images and a mixture, measure what was "
                       "learned on the held-out real split, run the downstream evaluation and write report.html.")
    add_data_args(p, required=False)
    p.add_argument("--out", default="demo-out", help="output folder (default demo-out; a previous demo there is replaced)")
    p.add_argument("--quick", action="store_true", help="a shortened run (64 px, a few steps per stage) to check the setup")
    p.add_argument("--seed", type=int, default=0, help="seed of every stage (default 0)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from seas.cli.options import data_config

    cfg = DemoConfig.quick() if args.quick else DemoConfig()
    cfg.seed = args.seed
    run_demo(args.out, cfg, data_config(args) if args.data else None)
    return 0
