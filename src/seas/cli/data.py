"""``seas data`` (a dataset and its split) and ``seas backbone`` (a base model)."""

from __future__ import annotations

from pathlib import Path

from seas.cli.options import add_data_args, data_config


def add_parsers(sub) -> None:
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


def cmd_data(args) -> int:
    from seas.data.config import FITS
    from seas.data.split import check_dataset, split_samples_used, summary_rows, write_split
    from seas.data.training_set import split_channels
    from seas.data.transforms import kept_defect_table
    from seas.data.readers import dataset_folder
    from seas.files.checks import ProblemList, nested_problems, output_folder_problems

    cfg = data_config(args)
    problems = ProblemList()  # every problem of the dataset (and of --write-split's folder) at once
    split, warnings = check_dataset(cfg, problems, decode="none" if args.no_check else "all")
    if args.write_split:
        problems.extend(nested_problems(args.write_split, dataset_folder(cfg), "--write-split"))  # not into the data
        problems.extend(output_folder_problems(Path(args.write_split).parent, 1 << 20, "--write-split"))
    problems.raise_any()
    print(f"product {cfg.product_name}  layout {cfg.layout}  root {cfg.root}")
    channels = cfg.channels
    if channels == "auto" and not args.no_check:
        channels = f"auto ({split_channels(cfg.channels, split)})"
    print(f"augment {cfg.augment}  guidance {cfg.guidance}  inside_rule {cfg.inside_rule}  mask_rule {cfg.mask_rule}"
          f"  fit {cfg.fit}  channels {channels}")
    print(f"{'type':<24}{'images':>8}{'train':>8}{'test':>8}")
    for kind, n, n_train, n_test in summary_rows(split):
        print(f"{kind:<24}{n:>8}{n_train:>8}{n_test:>8}")
    if split.unused_normals:
        print(f"({split.unused_normals} further normal training images are not used: --max-normal-train {cfg.max_normal_train})")
    kept = [] if args.no_check else kept_defect_table(split_samples_used(split), cfg.mask_rule)
    if kept:
        print(f"defect masks kept whole/in part/not at all, and the share of defect pixels kept, under each fit "
              f"(this run: {cfg.fit})")
        print(f"{'type':<24}" + "".join(f"{fit:>20}" for fit in FITS))
        for kind, counts in kept:
            cells = (f"{'/'.join(map(str, counts[fit][:3]))} {counts[fit][3]:.0%}" for fit in FITS)
            print(f"{kind:<24}" + "".join(f"{cell:>20}" for cell in cells))
    for message in warnings:
        print(f"warning: {message}")
    if args.write_split:
        print(f"split written to {write_split(split, cfg, args.write_split)}")
    return 0


def cmd_backbone(args) -> int:
    from seas.model.backbone import load_backbone, save_components, write_tiny_backbone

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


