"""``seas train``, ``seas train-mask``, ``seas bootstrap`` and ``seas pretrain``."""

from __future__ import annotations

import argparse
import sys

from seas.cli.options import (
    MASK_HEAD_BYTES,
    add_data_args,
    add_run_config_args,
    check_run_inputs,
    data_config,
    main_process,
    resolve_config,
)
from seas.config import MaskConfig, TrainConfig

PROFILE_HELP = {
    "generator": "memory/speed profile (docs/PERFORMANCE.md). default: fp32, AdamW; fast: bf16 autocast "
                 "(fp16 on GPUs without bf16) with the frozen parts in half on a GPU, fp32 on a CPU (where bf16 "
                 "is slower); low-memory: bf16 autocast, frozen parts in half, gradient checkpointing and 8-bit "
                 "AdamW (where bitsandbytes is installed)",
    "mask": "memory/speed profile (docs/PERFORMANCE.md). default: fp32; fast: bf16 autocast with the frozen "
            "generator in half on a GPU, fp32 on a CPU; low-memory: bf16 autocast and frozen generator in half",
}


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="stage 1: SeaS fine-tuning of the generator",
                       description="Fine-tune U-Net and token embeddings with L_an + L_DA + L_NA (spec section 4). "
                       "Defaults are the authors' release; docs/TRAINING.md lists every option against it.")
    add_data_args(p)
    p.add_argument("--out", required=True, help="run folder to create (refused if it holds a finished run)")
    add_run_config_args(p, PROFILE_HELP["generator"])
    TrainConfig.add_arguments(p.add_argument_group("stage 1 (defaults: the authors' release)"))
    _add_resume_args(p, "stage 1")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("train-mask", help="stage 2: train the Refined Mask Prediction head",
                       description="Train the RMP head on a finished stage-1 run, generator frozen (spec section 5).")
    p.add_argument("--run", required=True, help="run folder of a finished 'seas train'")
    add_run_config_args(p, PROFILE_HELP["mask"])
    MaskConfig.add_arguments(p.add_argument_group("stage 2 (defaults: the authors' release)"))
    _add_resume_args(p, "stage 2")
    p.set_defaults(func=cmd_train_mask)

    from seas.training.configs import BootstrapConfig, PretrainConfig

    p = sub.add_parser("bootstrap", help="train a tiny base model on a product's normal images (no SD weights needed)",
                       description="Build the tiny SD-1.x-shaped model and train its VAE and U-Net briefly on the "
                       "product's normal training images: a small base model of your own product for machines "
                       "without Stable Diffusion weights. The output folder is a valid --base.")
    add_data_args(p)
    p.add_argument("--out", required=True, help="folder to write the model to (diffusers layout)")
    BootstrapConfig.add_arguments(p.add_argument_group("bootstrap"))
    p.set_defaults(func=cmd_bootstrap)

    p = sub.add_parser("pretrain", help="pretrain the tiny base on the procedural corpus (what --base seas-tiny ships)",
                       description="Train the tiny SD-1.x-shaped model (VAE, then U-Net and text encoder) on the "
                       "procedural corpus of captioned industrial photographs, with checkpoints: running the same "
                       "command again resumes. Writes curves.jsonl, snapshots and model/ (fp16 safetensors with "
                       "MODEL_CARD.md). The defaults reproduce the shipped seas-tiny (its card gives the command).")
    p.add_argument("--out", required=True, help="folder to write to (new, or an unfinished pretraining to resume)")
    PretrainConfig.add_arguments(p.add_argument_group("pretraining (defaults: the shipped seas-tiny)"))
    p.set_defaults(func=cmd_pretrain)


def _add_resume_args(p: argparse.ArgumentParser, stage: str) -> None:
    p.add_argument("--resume", default=None, metavar="latest|PATH", help=f"continue an unfinished {stage} from a checkpoint")
    p.add_argument("--overwrite", action="store_true", help=f"replace a finished or unfinished {stage} in this folder")


def train_config(args) -> TrainConfig:
    """Stage 1's config from the profile, --reference, --config and the options given."""
    from seas.profiles import has_bitsandbytes, train_switches

    cfg = resolve_config(TrainConfig, args, {"profile": args.profile, **train_switches(args.profile, "generator")})
    if args.profile == "low-memory" and args.optimizer is None and cfg.optimizer == "adamw" and not has_bitsandbytes():
        print("note: --profile low-memory uses 8-bit AdamW only with bitsandbytes installed "
              "(pip install bitsandbytes); training with AdamW (4x the optimizer memory)", file=sys.stderr)
    return cfg


def mask_config(args) -> MaskConfig:
    """Stage 2's config from the profile, --reference, --config and the options given."""
    from seas.profiles import train_switches

    return resolve_config(MaskConfig, args, {"profile": args.profile, **train_switches(args.profile, "mask")})


def cmd_train(args) -> int:
    from seas.training.stage1 import train_generator

    run = train_generator(data_config(args), train_config(args), args.out, resume=args.resume, overwrite=args.overwrite)
    if main_process():
        print(f"generator written to {run}")
    return 0


def cmd_train_mask(args) -> int:
    from seas.training.stage2 import train_mask_head

    cfg = mask_config(args)
    check_run_inputs(args.run, args.run, MASK_HEAD_BYTES, whole_split=False, option="--run")
    run = train_mask_head(args.run, cfg, resume=args.resume, overwrite=args.overwrite)
    if main_process():
        print(f"mask head written to {run / 'mask_head'}")
    return 0


def cmd_bootstrap(args) -> int:
    from seas.training.bootstrap import bootstrap_backbone
    from seas.training.configs import BootstrapConfig

    cfg = BootstrapConfig.from_dict(BootstrapConfig.given(args))
    data_cfg = data_config(args)
    check_bootstrap(data_cfg, cfg, args.out)
    print(f"base model written to {bootstrap_backbone(data_cfg, cfg, args.out)}")
    return 0


def cmd_pretrain(args) -> int:
    import shlex

    from seas.training.configs import PretrainConfig
    from seas.training.pretrain import pretrain

    cfg = PretrainConfig.from_dict(PretrainConfig.given(args))
    command = "seas pretrain " + shlex.join(sys.argv[2:]) if sys.argv[1:2] == ["pretrain"] else "seas pretrain"
    perceptual = None
    if cfg.vae_perceptual and cfg.vae_steps:  # before anything is written: missing weights leave no folder
        from seas.evaluation.lpips_weights import load_lpips_weights

        perceptual = load_lpips_weights()
    try:
        model = pretrain(cfg, args.out, command=command, perceptual=perceptual)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the checkpoints in {args.out} are kept; run the same command to resume", file=sys.stderr)
        return 130
    print(f"pretrained base written to {model} (model card: {model / 'MODEL_CARD.md'})")
    return 0


# ----------------------------------------------------------------------------- checks before work
# (stage 1 checks its own inputs: seas.training.stage1.train_generator)

BOOTSTRAP_BYTES = 128 * 2**20  # the tiny model at the largest widths the help suggests: rough


def check_bootstrap(data_cfg, cfg, out) -> None:
    """Every problem of ``seas bootstrap`` at once, before training: the dataset and the normal
    training images it reads (decoded), and ``--out`` (new or empty, outside the dataset,
    writable, with space)."""
    from pathlib import Path

    from seas.data.readers import dataset_folder, read_dataset
    from seas.data.split import check_samples, few_shot_split
    from seas.files.checks import ProblemList, nested_problems, output_folder_problems

    problems = ProblemList()
    samples = read_dataset(data_cfg, problems)
    if samples:
        with problems.collect():
            few_shot_split(samples, data_cfg)  # refuses a product without normal training images
        normals = sorted((s for s in samples if s.is_normal and s.partition == "train"), key=lambda s: Path(s.image).name)
        check_samples(normals[: cfg.max_images], data_cfg.mask_rule, problems)  # as bootstrap_backbone reads them
    out = Path(out)
    if out.is_dir() and any(out.iterdir()):
        problems.add(f"--out {out}: not empty; choose a new folder for the bootstrapped model")
    problems.extend(nested_problems(out, dataset_folder(data_cfg)))
    problems.extend(output_folder_problems(out, BOOTSTRAP_BYTES))
    problems.raise_any()
