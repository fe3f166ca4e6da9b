"""The ``seas`` command: a thin layer that parses options, builds configs and calls the library.

User mistakes (bad data, bad options, wrong folders) print one line ``error: ...`` and exit 2;
so does an output that cannot be written (full disk, read-only folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import sys
from pathlib import Path

from .errors import SeasError

LAYOUT_HELP = (
    "dataset layout preset: mvtec (MVTec AD), mvtec3d (MVTec 3D AD, RGB), visa (VisA original), "
    "visa-mvtec (VisA re-split into the MVTec layout), folder (described by --normal/--anomaly/--mask)"
)


def add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("data (see docs/DATA.md)")
    g.add_argument("--data", required=required, help="dataset root folder, or a YAML dataset description (.yaml/.yml)")
    g.add_argument("--layout", default=None, help=LAYOUT_HELP + " (default: mvtec, or the YAML's)")
    g.add_argument("--product", default=None, help="product sub-folder (e.g. bottle); omit when --data is the product")
    g.add_argument("--normal", action="append", default=None, metavar="GLOB", help="folder layout: normal images (repeatable)")
    g.add_argument("--normal-test", action="append", default=None, metavar="GLOB",
                   help="folder layout: normal test images (default: the last third of --normal, sorted)")
    g.add_argument("--anomaly", action="append", default=None, metavar="TYPE=GLOB",
                   help="folder layout: anomaly images of one type (repeatable)")
    g.add_argument("--mask", default=None, metavar="PATTERN",
                   help="folder layout: mask path pattern with {root} {parent} {stem} {name} {type} (default {parent}/{stem}.png)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="rotation/flip augmentation in training (default: layout preset; on except VisA)")
    g.add_argument("--guidance", type=float, default=None, help="default guidance scale at generation (preset: 8 MVTec, 2 VisA, 5 MVTec 3D)")
    g.add_argument("--inside-rule", choices=["eq1", "gt0"], default=None,
                   help="pixels inside the anomaly for L_DA's ob1 term: M==1 (eq1, MVTec AD) or M>0 (gt0, VisA, 3D)")
    g.add_argument("--mask-threshold", choices=["half", "nonzero"], default=None,
                   help="mask binarisation: half of the value range (default) or any non-zero value (VisA)")
    g.add_argument("--train-fraction", type=float, default=None, help="few-shot share per type (default 1/3)")
    g.add_argument("--max-normal-train", type=int, default=None, help="normal training images (default 60)")


def data_config(args):
    from .data.config import DataConfig

    anomalies = None
    if args.anomaly:
        anomalies = {}
        for item in args.anomaly:
            kind, sep, pattern = item.partition("=")
            if not sep or not kind or not pattern:
                raise SeasError(f"--anomaly {item!r}: write TYPE=GLOB, e.g. --anomaly scratch='scratch/*.png'")
            anomalies.setdefault(kind, []).append(pattern)
    values = dict(
        layout=args.layout, product=args.product, normal=args.normal, normal_test=args.normal_test,
        anomalies=anomalies, mask=args.mask, augment=args.augment, guidance=args.guidance,
        inside_rule=args.inside_rule, mask_threshold=args.mask_threshold,
        train_fraction=args.train_fraction, max_normal_train=args.max_normal_train,
    )
    given = {k: v for k, v in values.items() if v is not None}
    if Path(args.data).suffix in (".yaml", ".yml"):
        return DataConfig.from_yaml(args.data, **given)
    return DataConfig(root=args.data, **given)


# ----------------------------------------------------------------------------- data


def cmd_data(args) -> int:
    from .data.readers import read_dataset
    from .data.split import check_samples, few_shot_split, split_samples_used, summary_rows, write_split

    cfg = data_config(args)
    samples = read_dataset(cfg)
    split = few_shot_split(samples, cfg)
    warnings = [] if args.no_check else check_samples(split_samples_used(split), cfg.mask_threshold)
    print(f"product {cfg.product_name}  layout {cfg.layout}  root {cfg.root}")
    print(f"augment {cfg.augment}  guidance {cfg.guidance}  inside_rule {cfg.inside_rule}  mask_threshold {cfg.mask_threshold}")
    print(f"{'type':<24}{'images':>8}{'train':>8}{'test':>8}")
    for kind, n, n_train, n_test in summary_rows(split):
        print(f"{kind:<24}{n:>8}{n_train:>8}{n_test:>8}")
    if split.unused_normals:
        print(f"({split.unused_normals} further normal training images are not used: --max-normal-train {cfg.max_normal_train})")
    for message in warnings:
        print(f"warning: {message}")
    if args.write_split:
        print(f"split written to {write_split(split, cfg, args.write_split)}")
    return 0


# ----------------------------------------------------------------------------- backbone


def cmd_backbone(args) -> int:
    from .backbone import load_backbone, save_components, write_tiny_backbone

    if args.base == "tiny" and args.save:
        folder = write_tiny_backbone(args.save, seed=args.seed, width=args.width)
        print(f"tiny backbone written to {folder}")
        return 0
    bb = load_backbone(args.base, args.base_config)
    for name in ("text_encoder", "unet", "vae"):
        n = sum(p.numel() for p in getattr(bb, name).parameters())
        print(f"{name:<14}{n / 1e6:10.2f} M parameters")
    print(f"tokenizer     {len(bb.tokenizer)} tokens")
    print(f"U-Net blocks  {', '.join(bb.unet.config.down_block_types)}")
    print(f"image sizes   multiples of {bb.size_multiple} (VAE factor {bb.vae_factor})")
    if args.save:
        parts = dict(tokenizer=bb.tokenizer, text_encoder=bb.text_encoder, unet=bb.unet, vae=bb.vae, scheduler=bb.scheduler)
        print(f"written to {save_components(parts, Path(args.save))}")
    return 0


# ----------------------------------------------------------------------------- train


def add_train_args(p: argparse.ArgumentParser) -> None:
    from .config import TrainConfig

    d = TrainConfig()
    g = p.add_argument_group("stage 1 (defaults: the authors' release)")
    g.add_argument("--base", default=d.base, help="base SD 1.x model: diffusers folder, .safetensors/.ckpt, hub id, or 'tiny'")
    g.add_argument("--base-config", default=None, help="for a single-file --base: a diffusers folder (or hub id) with its configs")
    g.add_argument("--out", required=True, help="run folder to create (refused if it holds a finished run)")
    g.add_argument("--steps", type=int, default=None, help="optimizer updates (default 800 x number of types)")
    g.add_argument("--resolution", type=int, default=d.resolution, help="training image size (default 512)")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="anomaly samples per micro-batch, plus as many normal (default 2)")
    g.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per optimizer update (default 2)")
    g.add_argument("--lr-unet", type=float, default=d.lr_unet, help="U-Net learning rate (default 4e-6)")
    g.add_argument("--lr-text", type=float, default=d.lr_text, help="token-embedding learning rate (default 4e-5)")
    add_profile_args(g, "generator")
    g.add_argument("--optimizer", choices=["adamw", "adamw8bit"], default=None,
                   help="adamw8bit needs bitsandbytes (the reference's choice; default: the profile's)")
    g.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="recompute U-Net activations in backward: less memory, each block's forward runs "
                   "twice (default: the profile's)")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of every random draw (default 0)")
    g.add_argument("--tokens-per-type", type=int, default=d.tokens_per_type, help="anomaly tokens per type (default 4)")
    g.add_argument("--normal-tokens", type=int, default=d.normal_tokens, help="normal tokens (default 1)")
    g.add_argument("--train-new-rows-only", action="store_true", help="train only the new token rows (reference: whole matrix)")
    g.add_argument("--da-with-up-blocks", action="store_true", help="L_DA maps: mean of down and up blocks (reference: down only)")
    g.add_argument("--attention-softmax", choices=["spatial", "token"], default=d.attention_softmax, help="(reference: spatial)")
    g.add_argument("--attention-normalize", choices=["joint", "sample"], default=d.attention_normalize,
                   help="min-max over the anomaly half jointly (reference) or per sample")
    g.add_argument("--binarize-masks", action="store_true", help="threshold resized masks at 0.5 (reference keeps soft borders)")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="optimizer updates between checkpoints")
    g.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints, help="checkpoints kept (oldest removed)")
    g.add_argument("--resume", default=None, metavar="latest|PATH", help="continue an unfinished run from a checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace a finished or unfinished run in --out")


PROFILE_HELP = {
    "generator": "default: fp32, AdamW; fast: bf16 autocast (fp16 on GPUs without bf16) with the frozen parts "
                 "in half on a GPU, fp32 on a CPU (where bf16 is slower); low-memory: bf16 autocast, frozen parts "
                 "in half, gradient checkpointing and 8-bit AdamW (where bitsandbytes is installed). "
                 "Explicit options win",
    "mask": "default: fp32; fast: bf16 autocast with the frozen generator in half on a GPU, fp32 on a CPU; "
            "low-memory: bf16 autocast and frozen generator in half on any device. Explicit options win",
}


def add_profile_args(g, stage: str) -> None:
    """--profile and the precision switches it sets, shared by both training stages."""
    from .config import PROFILES

    g.add_argument("--profile", choices=PROFILES, default="default",
                   help=f"memory/speed profile (docs/PERFORMANCE.md). {PROFILE_HELP[stage]}")
    g.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default=None,
                   help="autocast precision; trained weights stay fp32 (default: the profile's; default profile: no)")
    g.add_argument("--half-frozen", action=argparse.BooleanOptionalAction, default=None,
                   help="under mixed precision, store the frozen parts (VAE, text-encoder layers) in half "
                   "precision (default: on)")


def profile_config(config_class, args, stage: str):
    """``config_class`` from the profile's switches, overridden by the options given explicitly."""
    from .profiles import train_switches

    names = {f.name for f in dataclasses.fields(config_class)}
    values = train_switches(args.profile, stage)
    values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    return config_class(**values)


def train_config(args):
    from .config import TrainConfig
    from .profiles import has_bitsandbytes

    if args.profile == "low-memory" and args.optimizer is None and not has_bitsandbytes():
        print("note: --profile low-memory uses 8-bit AdamW only with bitsandbytes installed "
              "(pip install bitsandbytes); training with AdamW (4x the optimizer memory)", file=sys.stderr)
    return profile_config(TrainConfig, args, "generator")


def _main_process() -> bool:
    """True in a single process, and in process 0 under torchrun / accelerate launch."""
    return os.environ.get("RANK", "0") == "0"


def cmd_train(args) -> int:
    from .training.stage1 import train_generator

    run = train_generator(data_config(args), train_config(args), args.out, resume=args.resume, overwrite=args.overwrite)
    if _main_process():
        print(f"generator written to {run}")
    return 0


# ----------------------------------------------------------------------------- train-mask


def cmd_train_mask(args) -> int:
    from .config import MaskConfig
    from .training.stage2 import train_mask_head

    cfg = profile_config(MaskConfig, args, "mask")
    run = train_mask_head(args.run, cfg, resume=args.resume, overwrite=args.overwrite)
    if _main_process():
        print(f"mask head written to {run / 'mask_head'}")
    return 0


def add_train_mask_parser(sub) -> None:
    from .config import MaskConfig

    d = MaskConfig()
    p = sub.add_parser("train-mask", help="stage 2: train the Refined Mask Prediction head",
                       description="Train the RMP head on a finished stage-1 run, generator frozen (spec section 5).")
    p.add_argument("--run", required=True, help="run folder of a finished 'seas train'")
    p.add_argument("--steps", type=int, default=None, help="optimizer updates (default: as many as stage 1, reference)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="anomaly samples per micro-batch, plus as many normal")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per update (default 1)")
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate (default 5e-4)")
    p.add_argument("--timesteps", choices=["all", "low"], default=d.timesteps,
                   help="training noise levels: all (reference) or low (those of the last --mask-steps sampling steps)")
    p.add_argument("--sample-steps", type=int, default=d.sample_steps, help="sampling steps that define the low range (25)")
    p.add_argument("--mask-steps", type=int, default=d.mask_steps, help="last sampling steps whose masks are averaged (3)")
    add_profile_args(p, "mask")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the head's weights and every draw (default 0)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="updates between checkpoints")
    p.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints, help="checkpoints kept")
    p.add_argument("--resume", default=None, metavar="latest|PATH", help="continue an unfinished stage 2")
    p.add_argument("--overwrite", action="store_true", help="replace a trained mask head")
    p.set_defaults(func=cmd_train_mask)


# ----------------------------------------------------------------------------- bootstrap and demo


def add_bootstrap_parser(sub) -> None:
    from .bootstrap import BootstrapConfig

    d = BootstrapConfig()
    p = sub.add_parser("bootstrap", help="train a tiny base model on a product's normal images (no SD weights needed)",
                       description="Build the tiny SD-1.x-shaped model and train its VAE and U-Net briefly on the "
                       "product's normal training images: a small base model of your own product for machines "
                       "without Stable Diffusion weights. The output folder is a valid --base.")
    add_data_args(p)
    p.add_argument("--out", required=True, help="folder to write the model to (diffusers layout)")
    p.add_argument("--resolution", type=int, default=d.resolution, help="image size (default 128)")
    p.add_argument("--width", type=int, default=d.width, help="tiny U-Net and text encoder width (default 32)")
    p.add_argument("--vae-width", type=int, default=d.vae_width, help="tiny VAE width (default 16)")
    p.add_argument("--vae-steps", type=int, default=d.vae_steps, help="VAE updates (default 300)")
    p.add_argument("--unet-steps", type=int, default=d.unet_steps, help="U-Net updates (default 400)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per update (default 8)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed (default 0)")
    p.set_defaults(func=cmd_bootstrap)


def cmd_bootstrap(args) -> int:
    from .bootstrap import BootstrapConfig, bootstrap_backbone

    names = {f.name for f in dataclasses.fields(BootstrapConfig)}
    cfg = BootstrapConfig(**{k: v for k, v in vars(args).items() if k in names and v is not None})
    print(f"base model written to {bootstrap_backbone(data_config(args), cfg, args.out)}")
    return 0


def add_demo_parser(sub) -> None:
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
    from .demo import DemoConfig, run_demo

    cfg = DemoConfig.quick() if args.quick else DemoConfig()
    cfg.seed = args.seed
    run_demo(args.out, cfg, data_config(args) if args.data else None)
    return 0


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seas", description="SeaS: few-shot anomaly image generation with masks.")
    parser.add_argument("--version", action="version", version=f"seas {__import__('seas').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="summarise a dataset and its few-shot split", description="Read a dataset, "
                       "check its images and masks, and print per-type counts of the few-shot split.")
    add_data_args(p)
    p.add_argument("--write-split", metavar="FILE", help="also write the split as JSON")
    p.add_argument("--no-check", action="store_true", help="skip decoding every image and mask")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("backbone", help="inspect or save a base model (or write the tiny one)",
                       description="Load a base model through the same path training uses and print its parts; "
                       "--save writes it as a diffusers folder (with --base tiny: writes a new tiny model).")
    p.add_argument("--base", default="tiny", help="diffusers folder, .safetensors/.ckpt, hub id, or 'tiny'")
    p.add_argument("--base-config", default=None, help="configs for a single-file --base")
    p.add_argument("--save", default=None, metavar="DIR", help="write the model to DIR as a diffusers folder")
    p.add_argument("--seed", type=int, default=0, help="tiny model: seed of its random weights")
    p.add_argument("--width", type=int, default=32, help="tiny model: base channel width (U-Net: w, 2w, 4w, 4w)")
    p.set_defaults(func=cmd_backbone)

    p = sub.add_parser("train", help="stage 1: SeaS fine-tuning of the generator",
                       description="Fine-tune U-Net and token embeddings with L_an + L_DA + L_NA (spec section 4).")
    add_data_args(p)
    add_train_args(p)
    p.set_defaults(func=cmd_train)
    add_train_mask_parser(sub)
    from .evaluation.evaluate import add_parser as add_evaluate_parser

    add_evaluate_parser(sub)
    from .generate import add_parser as add_generate_parser

    add_generate_parser(sub)
    add_bootstrap_parser(sub)
    add_demo_parser(sub)
    return parser


# Failures of a write (the writers name the output path; temporaries are already removed).
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def main(argv: list[str] | None = None) -> int:
    # Keep library progress bars and advice out of the user's terminal (read at their import).
    for key, value in (("TOKENIZERS_PARALLELISM", "false"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                       ("TRANSFORMERS_VERBOSITY", "error"), ("DIFFUSERS_VERBOSITY", "error")):
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SeasError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in WRITE_ERRNOS or err.filename is None:
            raise
        print(f"error: cannot write {err.filename}: {err.strerror}; free space or choose another --out", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
