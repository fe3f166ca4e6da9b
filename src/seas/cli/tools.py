"""``seas import-official``: a model trained with the authors' code as a run folder of ours;
``seas export-run``: a run (an adapter run merged) as a plain diffusers folder."""

from __future__ import annotations

from seas.cli.options import add_data_args, data_config


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "import-official", help="turn a generator and rmp trained with the authors' code into a run folder",
        description="Build a finished run folder (as 'seas train' + 'seas train-mask' write it) from the authors' "
        "generation checkpoint folder (diffusers unet/, text_encoder/, tokenizer/, optional scheduler/) and their "
        "mask-head state dict 'rmp'. The VAE (and the scheduler when the folder has none) comes from --base; the "
        "split from the dataset flags. Everything is checked before --out is created.",
    )
    p.add_argument("--generator", required=True, metavar="DIR",
                   help="the authors' checkpoint folder (unet/, text_encoder/, tokenizer/ sub-folders)")
    p.add_argument("--rmp", required=True, metavar="FILE", help="the authors' mask-head state dict (torch.save)")
    p.add_argument("--types", required=True, metavar="A,B,C",
                   help="anomaly types in the authors' token order: type k owns tokens sks{4k+1}..sks{4k+4}")
    p.add_argument("--base", required=True,
                   help="the SD 1.x model the authors fine-tuned (diffusers folder, .safetensors/.ckpt, hub id): "
                        "gives the VAE")
    p.add_argument("--base-config", default=None, help="for a single-file --base: a diffusers folder with its configs")
    p.add_argument("--resolution", type=int, default=512, help="the training resolution (default 512)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder to create (must not exist, or be empty)")
    add_data_args(p)
    p.set_defaults(func=cmd_import_official)

    from seas.config import SAVE_DTYPES

    p = sub.add_parser(
        "export-run", help="write a run as a plain diffusers folder (a LoRA run merged into its base)",
        description="Write a finished run into a new folder as full fine-tuning writes one: unet/, text_encoder/, "
        "tokenizer/, scheduler/, vae/ and model_index.json (StableDiffusionPipeline.from_pretrained loads it), the "
        "run's record and split, and its mask head. A LoRA run (seas train --adapter lora) needs --merge: its "
        "adapter is folded into the base's U-Net weights and its token rows into the embedding matrix. The output "
        "is itself a run: seas generate, train-mask and evaluate read it.",
    )
    p.add_argument("--run", required=True, help="run folder of a finished 'seas train'")
    p.add_argument("--out", required=True, help="folder to create (must not exist, or be empty)")
    p.add_argument("--merge", action="store_true", help="fold a LoRA run's adapter into the base's weights")
    p.add_argument("--save-dtype", choices=SAVE_DTYPES, default=None,
                   help="precision of the written weights (default: the run's)")
    p.set_defaults(func=cmd_export_run)


def cmd_import_official(args) -> int:
    from seas.training.import_official import import_official

    types = args.types.split(",")
    out = import_official(args.generator, args.rmp, types, args.base, data_config(args), args.out,
                          resolution=args.resolution, base_config=args.base_config)
    print(f"run written to {out} (types in token order: {', '.join(t.strip() for t in types)})")
    return 0


def cmd_export_run(args) -> int:
    from seas.training.export_run import export_run

    out = export_run(args.run, args.out, merge=args.merge, save_dtype=args.save_dtype)
    print(f"run written to {out} (a diffusers folder: StableDiffusionPipeline.from_pretrained('{out}'))")
    return 0
