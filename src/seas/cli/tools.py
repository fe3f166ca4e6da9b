"""``seas import-official``: a model trained with the authors' code as a run folder of ours."""

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


def cmd_import_official(args) -> int:
    from seas.training.import_official import import_official

    types = args.types.split(",")
    out = import_official(args.generator, args.rmp, types, args.base, data_config(args), args.out,
                          resolution=args.resolution, base_config=args.base_config)
    print(f"run written to {out} (types in token order: {', '.join(t.strip() for t in types)})")
    return 0
