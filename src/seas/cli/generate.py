"""``seas generate`` and ``seas export``: sample a finished run into a folder, and export it.

Several processes (torchrun / accelerate launch) share the work: each samples its batches, then
the main process merges the manifest parts and runs the export.
"""

from __future__ import annotations

from seas.cli.options import add_deprecated, add_run_config_args, resolve_config
from seas.config import GenerationConfig, GenerationSwitches
from seas.data.readers import GOOD
from seas.errors import ConfigError

PROFILE_HELP = ("memory/speed profile. default: fp32; fast: fp16 weights on a GPU (fp32 on a CPU, where bf16 is "
                "slower); low-memory: half-precision weights (fp16 on a GPU, bf16 on a CPU) plus VAE slicing and "
                "tiling. Explicit memory options win")


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "generate", help="generate anomaly images with masks, and normal images",
        description="Sample a finished run (stage 1 and 2) into a folder of images, masks and a manifest "
        "(see docs/GENERATION.md). Re-running the same command resumes; several processes "
        "(torchrun / accelerate launch) share the work.",
    )
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="folder of a finished 'seas train' + 'seas train-mask'")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: <run>/generated)")
    p.add_argument("--type", action="append", default=None, metavar="NAME",
                   help="anomaly type to generate (repeatable), or 'all' for every type of the run")
    # --normal GLOB names a dataset's normal images in the commands that read a dataset
    p.add_argument("--good", dest="normal", action="store_true",
                   help="also generate normal images (folder 'good', no masks)")
    p.add_argument("--mix", action="append", default=None, metavar="A+B",
                   help="unseen anomalies mixing the token groups of several types, in this order (repeatable)")
    add_run_config_args(p, PROFILE_HELP)
    GenerationConfig.add_arguments(p.add_argument_group("sampling (defaults: the authors' release)"))
    # --steps counts optimizer updates in every other command; the sampler's are --sample-steps
    add_deprecated(p, "--steps", "--sample-steps", "steps", type=int)
    add_deprecated(p, "--normal", "--good", "normal", value=True)
    p.add_argument("--device", default=None,
                   help="torch device (default: cuda if available, else cpu; with several processes each takes its own GPU)")
    GenerationSwitches.add_arguments(p.add_argument_group(
        "memory and precision (docs/GENERATION.md; defaults: the --profile's; a folder resumes only with the same)"))
    p.add_argument("--export-mvtec", default=None, metavar="DIR",
                   help="afterwards, also write the outputs as an MVTec AD product folder DIR/<product>")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("export", help="write a generated folder as an MVTec AD or a semantic-segmentation product folder",
                       description="Copy the outputs of 'seas generate' or 'seas augment' into the MVTec AD layout "
                       "(binary masks) or a semantic-segmentation layout (images/, class-index masks/, "
                       "classes.txt); see docs/GENERATION.md, Export.")
    p.add_argument("generated", metavar="GENERATED_DIR", help="the --out folder of 'seas generate' or 'seas augment'")
    p.add_argument("--out", required=True, metavar="DIR", help="writes DIR/<product>")
    p.add_argument("--layout", choices=("mvtec", "semantic"), default="mvtec",
                   help="mvtec: test/<kind>/ and ground_truth/<kind>/ binary masks (default); semantic: images/, "
                        "masks/ (class index, 0 normal) and classes.txt")
    p.add_argument("--curated", action="store_true",
                   help="only the pairs accepted in 'seas gallery' (its curation.json)")
    p.set_defaults(func=cmd_export)


def switches_from_args(args, device: str) -> GenerationSwitches:
    """The memory switches: ``--profile``'s on ``device``, then a ``--config`` file's ``memory:``
    section, then the options given explicitly. The one place the profile is resolved."""
    from seas.profiles import generation_switches

    profile = generation_switches(args.profile, device).to_dict()
    return resolve_config(GenerationSwitches, args, profile)


def kinds_from_args(args, run) -> list:
    """The :class:`~seas.generation.pipeline.Kind` s an invocation asks for: types (``all``
    expanded), mixtures, then ``good``; a name the run does not have is a one-line error."""
    from seas.generation.pipeline import resolve_kind
    from seas.model.prompts import MIX

    types = run.types
    names = []
    for name in args.type or []:
        names += types if name == "all" else [name]
    names += args.mix or []
    if args.normal:
        names.append(GOOD)
    if not names:
        raise ConfigError("nothing to generate: give --type NAME (or --type all), --mix A+B and/or --good")
    bad_mix = [m for m in args.mix or [] if MIX not in m]
    if bad_mix:
        raise ConfigError(f"--mix {bad_mix[0]}: name two or more types joined by '+', e.g. --mix {'+'.join(types[:2])}")
    named = [("--type", name) for name in args.type or [] if name not in ("all", GOOD)]
    named += [("--mix", part) for mix in args.mix or [] for part in mix.split(MIX)]
    for option, name in named:
        if name not in types:
            raise ConfigError(f"{option} {name}: the run {args.run} has no such type; "
                              f"choose from {', '.join(types)} (or --type all)")
    return [resolve_kind(name, run.prompt) for name in names]


def cmd_generate(args) -> int:
    from seas.cli.options import sampling_processes
    from seas.generation.export import export_mvtec
    from seas.generation.folder import generate_to_folder
    from seas.generation.generated import GeneratedFolder

    cfg = resolve_config(GenerationConfig, args)
    run, kinds = check_generate(args, cfg)
    state, device = sampling_processes(args.device)
    out = generate_to_folder(run, args.out, kinds, cfg, switches_from_args(args, device), device=device,
                             rank=state.process_index, world=state.num_processes,
                             progress=state.is_main_process and not args.quiet)
    state.wait_for_everyone()
    if not state.is_main_process:
        return 0
    folder = GeneratedFolder(out)
    manifest = folder.merge_journals()
    print(f"{len(folder.rows())} outputs in {out} (manifest {manifest})")
    if args.export_mvtec:
        print(f"MVTec AD layout written to {export_mvtec(out, args.export_mvtec)}")
    return 0


def output_bytes(num: int, n_kinds: int, resolution: int) -> int:
    """Rough size of generated outputs: per output an image, a mask and a probability map,
    counted as uncompressed RGB (PNG compresses them, masks most)."""
    return num * n_kinds * 3 * resolution * resolution * 3


def check_generate(args, cfg: GenerationConfig) -> tuple:
    """Every problem of ``seas generate`` at once, before the models are loaded: the run (its
    weights verified), the kinds asked for, ``--out`` and ``--export-mvtec`` (outside the run's
    dataset and the --masks folder, writable, with space) and ``--device``. Returns the run and
    the kinds; the user's masks are read by generation itself, also before any model is loaded."""
    from seas.cli.options import device_problem, run_dataset_problems
    from seas.files.checks import ProblemList, nested_problems, output_folder_problems, path_size
    from seas.generation.generated import GeneratedFolder
    from seas.run import Run

    problems = ProblemList()
    run, kinds = None, []
    with problems.collect():
        run = Run.load(args.run)
    if run is not None:
        with problems.collect():
            kinds = kinds_from_args(args, run)
        out = GeneratedFolder(args.out).path if args.out else GeneratedFolder.of_run(run.path).path
        needed = output_bytes(cfg.num, max(len(kinds), 1), run.resolution)
        outputs = [("--out", out)] + ([("--export-mvtec", args.export_mvtec)] if args.export_mvtec else [])
        for option, folder in outputs:  # never into the data this command reads
            problems.extend(run_dataset_problems(run, folder, option))
            if cfg.placement == "masks" and cfg.masks:
                problems.extend(nested_problems(folder, cfg.masks, option, "--masks"))
        problems.extend(output_folder_problems(out, max(needed - path_size(out), 0)))
        if args.export_mvtec:
            problems.extend(output_folder_problems(args.export_mvtec, needed, option="--export-mvtec"))
    problems.extend(filter(None, [device_problem(args.device)]))
    problems.raise_any()
    return run, kinds


def cmd_export(args) -> int:
    from seas.generation.export import export_mvtec, export_semantic

    check_export(args.generated, args.out)
    if args.layout == "semantic":
        target = export_semantic(args.generated, args.out, curated=args.curated, option="--out")
        print(f"semantic-segmentation layout written to {target}")
    else:
        print(f"MVTec AD layout written to {export_mvtec(args.generated, args.out, curated=args.curated, option='--out')}")
    return 0


def check_export(generated: str, out: str) -> None:
    """``seas export --out`` outside the data it reads: the generated folder and the dataset of
    the run that generated it (when that run is still there)."""
    from seas.cli.options import run_dataset_problems
    from seas.errors import SeasError
    from seas.files.checks import ProblemList, is_within
    from seas.generation.generated import GeneratedFolder
    from seas.run import Run

    problems = ProblemList()
    folder = None
    with problems.collect():
        folder = GeneratedFolder.existing(generated, option="seas export")
    if folder is not None:
        if is_within(out, folder.path):
            problems.add(f"--out {out}: lies inside the generated folder {folder.path}; choose an --out outside it")
        run_path = folder.settings().get("run")
        try:
            run = Run.load(run_path, verify=False) if isinstance(run_path, str) else None
        except SeasError:
            run = None  # the run was moved or deleted: its dataset is unknown
        if run is not None:
            problems.extend(run_dataset_problems(run, out))
    problems.raise_any()
