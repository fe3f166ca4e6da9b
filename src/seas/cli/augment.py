"""``seas augment``: defects of chosen types on the user's own images, inside given regions
(docs/GENERATION.md, "Augment"). Several processes (torchrun / accelerate launch) share the work
as in ``seas generate``."""

from __future__ import annotations

from argparse import Namespace

from seas.cli.generate import PROFILE_HELP, switches_from_args
from seas.cli.options import add_run_config_args, resolve_config
from seas.config import AugmentConfig, GenerationConfig, GenerationSwitches

# generate's options that mean nothing here: how many and which references (the inputs are the
# references), where the defects go (AugmentConfig's own), the background (always the input)
# and quality control (not offered for augmented images)
NOT_FOR_AUGMENT = ("num", "reference_images", "placement", "masks", "background", "qc", "qc_attempts")


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "augment", help="draw defects on your own images, where you want them",
        description="For every image of --images, draw a defect of each --type inside its region (the --masks "
        "file named like the image, or a moved real training mask with --placement real-masks); outside "
        "the regions the output equals the input, at the input's size. Written like 'seas generate' "
        "(manifest, resumable, several processes); see docs/GENERATION.md, Augment.",
    )
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="folder of a finished 'seas train' + 'seas train-mask'")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of the normal images to augment (any size)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_run_config_args(p, PROFILE_HELP)
    AugmentConfig.add_arguments(p.add_argument_group("what goes where"))
    GenerationConfig.add_arguments(p.add_argument_group("sampling (as seas generate)"), exclude=NOT_FOR_AUGMENT)
    p.add_argument("--device", default=None,
                   help="torch device (default: cuda if available, else cpu; with several processes each takes its own GPU)")
    GenerationSwitches.add_arguments(p.add_argument_group("memory and precision (as seas generate)"))
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_augment)


def cmd_augment(args) -> int:
    from seas.cli.options import sampling_processes
    from seas.generation.augment import augment_to_folder
    from seas.generation.generated import GeneratedFolder

    aug = resolve_config(AugmentConfig, args)
    # --placement and --masks are AugmentConfig's here, not the sampler's
    cfg = resolve_config(GenerationConfig, Namespace(**{k: v for k, v in vars(args).items() if k not in NOT_FOR_AUGMENT}))
    run = check_augment(args, aug)
    state, device = sampling_processes(args.device)
    out = augment_to_folder(run, args.images, args.out, aug, cfg, switches_from_args(args, device), device=device,
                            rank=state.process_index, world=state.num_processes,
                            progress=state.is_main_process and not args.quiet)
    state.wait_for_everyone()
    if not state.is_main_process:
        return 0
    folder = GeneratedFolder(out)
    manifest = folder.merge_journals()
    print(f"{len(folder.rows())} augmented images in {out} (manifest {manifest})")
    return 0


def check_augment(args, aug: AugmentConfig):
    """Every problem of ``seas augment`` at once, before the models are loaded: the run, the
    inputs (images, masks, types, regions: :func:`seas.generation.augment.read_inputs`), ``--out``
    (outside the run's dataset, --images and --masks, writable, with space) and ``--device``.
    Returns the run."""
    from seas.cli.options import device_problem, run_dataset_problems
    from seas.files.checks import ProblemList, nested_problems, output_folder_problems, path_size
    from seas.generation.augment import read_inputs
    from seas.run import Run

    problems = ProblemList()
    run = None
    with problems.collect():
        run = Run.load(args.run)
    if run is not None:
        inputs = None
        with problems.collect():
            inputs = read_inputs(args.images, aug, run.types)
        problems.extend(run_dataset_problems(run, args.out))
        problems.extend(nested_problems(args.out, args.images, "--out", "--images", kind="input folder"))
        if aug.masks:
            problems.extend(nested_problems(args.out, aug.masks, "--out", "--masks", kind="mask folder"))
        if inputs is not None:  # per output: image, mask, probability, region (+ per-type masks), uncompressed
            needed = sum(w * h * (3 + 3 + len(aug.types) * 2) for w, h in inputs.sizes) * aug.num_per_image
            problems.extend(output_folder_problems(args.out, max(needed - path_size(args.out), 0)))
    problems.extend(filter(None, [device_problem(args.device)]))
    problems.raise_any()
    return run
