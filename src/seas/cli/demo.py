"""``seas demo``: the whole pipeline on a CPU in minutes, from the shipped base, with no download.

1. data: a synthetic product (MVTec layout) written from a seed, or the user's ``--data``;
2. the base: ``seas-tiny``, pretrained on a procedural corpus and shipped with the package (the
   stand-in for Stable Diffusion), used as it is on the synthetic product; on ``--data``
   photographs first adapted briefly to the product's normal images (``adapt_steps``);
3. stage 1 and stage 2 on that base;
4. generation of every type, normal images and one mixture of two types;
5. evidence that it learned, on the held-out real test split: attention-map localisation and
   the mask head's masks on real images;
6. the downstream evaluation (real only vs real + generated vs classic baselines) and
   ``report.html``.

The demo's settings differ from the paper's where a tiny model and minutes of CPU demand it
(resolution 128, 1600 stage-1 updates, higher learning rates): they are in :class:`DemoConfig` and
recorded in the report. It shows the pipeline, its outputs and its measurements working
end to end; it cannot show Stable Diffusion's image quality.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from seas.config import ADAPTERS, PLACEMENTS, QC_MODES, SAVE_DTYPES, GenerationConfig, MaskConfig, TrainConfig
from seas.data.config import DataConfig
from seas.data.readers import GOOD
from seas.errors import ConfigError, RunError
from seas.evaluation.config import SEGMENTERS
from seas.fields import Config, option
from seas.files.atomic import read_json, remove_path, remove_temporaries, write_json
from seas.files.checks import ProblemList, Problems, nested_problems, output_folder_problems
from seas.training.estimates import base_size_multiple, check_base

DEMO_MARKER = "demo.json"  # written first (what the demo will create), rewritten last
DEMO_FORMAT = "seas-demo-2"
LEGACY_ENTRIES = ("base", "run", "evaluation")  # a marker without "created" (written by earlier versions)
DEMO_BYTES = 400 * 2**20  # rough: tiny base ~35 MB, the run's export and checkpoints, outputs


@dataclass
class DemoConfig(Config):
    """``seas demo``: every stage on a CPU in minutes. The defaults fit the synthetic product on a
    2-core CPU; :meth:`photographs` and :meth:`quick` are the other presets."""

    section = "demo"

    seed: int = option(0, help="seed of every stage")
    resolution: int = option(128, help="image size of every stage (a multiple of the base's size multiple)",
                             minimum=32)
    base: str = option("seas-tiny", help="base model: seas-tiny (pretrained, shipped with seas), a folder written "
                       "by seas pretrain or seas bootstrap, or an SD 1.x model as in seas train --base")
    # the synthetic product (when no --data is given): 4 training anomalies per type, as a third of a
    # small MVTec AD type gives, and 50 held-out ones per type so that the judge's numbers hold still
    n_train_good: int = option(60, help="synthetic product: normal training images", minimum=1, cli=False)
    n_test_good: int = option(50, help="synthetic product: normal test images", minimum=1, cli=False)
    n_per_type: int = option(54, help="synthetic product: images per anomaly type", minimum=2, cli=False)
    train_per_type: int = option(4, help="synthetic product: few-shot training images per type", minimum=1,
                                 cli=False)
    # adapting the base to the product's normal images before stage 1 (seas bootstrap --base)
    adapt_steps: int = option(0, help="U-Net updates adapting the base to the product's normal images before "
                              "stage 1 (0: none)", minimum=0)
    # stage 1 (a tiny model trained for minutes needs larger steps than SD's 4e-6 / 4e-5); 1600
    # updates name the types better than 800 (docs/RESULTS.md: 0.67 against 0.48 over three seeds)
    train_steps: int = option(1600, help="stage-1 updates", minimum=1)
    lr_unet: float = option(2e-4, help="stage-1 U-Net learning rate", minimum=0.0)
    lr_text: float = option(2e-3, help="stage-1 token-embedding learning rate", minimum=0.0)
    adapter: str = option("full", help="stage 1 trains the whole U-Net (full) or LoRA adapters (lora, needs peft), "
                          "as seas train --adapter", choices=ADAPTERS)
    lora_rank: int = option(16, help="--adapter lora: rank of the adapters", minimum=1)
    lora_lr: float = option(1e-3, help="--adapter lora: the adapters' learning rate (in place of --lr-unet)",
                            minimum=0.0)
    save_dtype: str = option("fp32", help="precision of the saved generator, as seas train --save-dtype",
                             choices=SAVE_DTYPES)
    # stage 2
    mask_head_updates: int = option(80, help="stage-2 updates", minimum=1)
    # generation
    num_per_kind: int = option(12, help="images generated per type, for normal images and for the mixture",
                               minimum=1)
    sample_steps: int = option(20, help="sampler steps per image", minimum=1)
    placement: str = option("free", help="where generated defects go, as seas generate --placement",
                            choices=tuple(p for p in PLACEMENTS if p != "masks"))
    qc: str = option("off", help="quality control, as seas generate --qc", choices=QC_MODES)
    # the tiny base's generated tiles come out green and pale (docs/GENERATION.md, Colour); the
    # reference decodes the sampler's latent as it is (--no-reference-stats)
    reference_stats: bool = option(True, help="give each generated latent its start image's channel statistics, "
                                   "as seas generate --reference-stats")
    # downstream evaluation: a small U-Net segmenter (docs/ABLATION.md: its spread over seeds)
    segmenter: str = option("unet", help="downstream segmenter's architecture", choices=SEGMENTERS)
    seg_steps: int = option(400, help="downstream segmenter's updates", minimum=1)
    seg_size: int = option(96, help="downstream segmenter's image size", minimum=16)
    seg_width: float = option(0.25, help="downstream segmenter's width multiplier", minimum=0.01)

    @classmethod
    def photographs(cls) -> "DemoConfig":
        """The default for ``--data``: the base adapted to the product's normal images first, a
        segmenter that can learn real photographs' small defects (192 px), and the 800 stage-1
        updates and the sampler's own latents its numbers were measured with (docs/RESULTS.md,
        magnetic tile: ``--reference-stats`` and 1,000 adaptation updates did no better there)."""
        return cls(adapt_steps=PHOTO_ADAPT_STEPS, seg_size=192, train_steps=PHOTO_TRAIN_STEPS, reference_stats=False)

    @classmethod
    def quick(cls) -> "DemoConfig":
        """A shortened demo for the test suite: every stage, far fewer steps, 64 px."""
        return cls(resolution=64, n_train_good=8, n_test_good=4, n_per_type=6, train_per_type=2, train_steps=3,
                   mask_head_updates=2, num_per_kind=2, sample_steps=3, seg_steps=4, seg_size=64)


PHOTO_ADAPT_STEPS = 150  # U-Net updates adapting seas-tiny to photographs (docs/RESULTS.md: time; 1,000 no better)
PHOTO_TRAIN_STEPS = 800  # stage-1 updates on a user's photographs


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


def write_demo_product(folder: Path, cfg: DemoConfig, options: dict | None = None) -> DataConfig:
    """Write the demo's synthetic product (a tile, MVTec layout, seeded by ``cfg.seed``) into
    ``folder``; return its data config, with the dataset ``options`` given (:func:`product_options`)."""
    from seas.data.synthetic import write_synthetic_product

    root = write_synthetic_product(folder, product="tile", seed=cfg.seed, size=cfg.resolution,
                                   n_train_good=cfg.n_train_good, n_test_good=cfg.n_test_good, n_per_type=cfg.n_per_type)
    return product_data_config(root, cfg, options)


def product_data_config(root: str | Path, cfg: DemoConfig, options: dict | None = None) -> DataConfig:
    """The synthetic product's data config: the MVTec AD layout, the demo's few-shot count unless
    a ``--train-fraction`` or ``--train-per-type`` was given, and the dataset ``options``."""
    options = options or {}
    few_shot = {} if {"train_fraction", "train_per_type"} & set(options) else {"train_per_type": cfg.train_per_type}
    return DataConfig(root=str(root), layout="mvtec", **few_shot, **options)


# dataset options that say where a dataset's files are: the synthetic product has its own
LOCATING = ("layout", "product", "mask", "normal", "normal_test", "anomaly")


def product_options(args) -> dict:
    """The dataset options given to ``seas demo`` without ``--data`` (``--guidance 3``,
    ``--no-augment``, ...), which the synthetic product takes as a dataset would; checked now
    (a bad value is a one-line error before anything is written). Options that locate files
    (``--layout``, ``--anomaly``, ...) need ``--data``."""
    locating = [f"--{name.replace('_', '-')}" for name in LOCATING if getattr(args, name, None) is not None]
    if locating:
        raise ConfigError(f"seas demo: {', '.join(locating)} locate{'s' if len(locating) == 1 else ''} a dataset's "
                          "files; give --data with them (without --data the demo writes its own synthetic product)")
    options = DataConfig.given(args)
    product_data_config(".", DemoConfig(), options)  # the values' checks, before anything is written
    return options


def demo_kinds(types: list[str]) -> list[str]:
    """What the demo generates: every type, normal images and a mixture of the first two types."""
    return [*types, GOOD] + (["+".join(types[:2])] if len(types) > 1 else [])


def demo_entries(synthetic: bool, adapted: bool) -> list[str]:
    """The names a demo writes into its ``--out`` (besides its marker ``demo.json``): the synthetic
    product's ``data``, the adapted base, the run and the evaluation."""
    return (["data"] if synthetic else []) + (["base"] if adapted else []) + ["run", "evaluation"]


def previous_entries(out: Path) -> list[str] | None:
    """The names a previous demo in ``out`` recorded in its marker as its own; ``None`` when
    ``out`` holds no marker. A marker of a demo from before the list (no ``created``) counts
    ``base``, ``run`` and ``evaluation`` only: its ``data/`` may be the user's."""
    marker = out / DEMO_MARKER
    if not marker.is_file():
        return None
    record = read_json(marker)
    created = record.get("created", list(LEGACY_ENTRIES)) if isinstance(record, dict) else None
    if not isinstance(created, list):
        raise RunError(f"{marker}: damaged demo record (no list of what it created); move the folder's contents "
                       "away yourself or choose a new --out")
    # only plain names directly inside out: a marker never makes the demo delete elsewhere
    return [n for n in created if isinstance(n, str) and n and Path(n).name == n and n not in (".", "..")]


def out_problems(out: Path, entries: list[str]) -> list[str]:
    """What stops the demo from writing ``entries`` into ``out`` (nothing is changed).

    A new or empty folder, or the folder of a previous demo (finished or interrupted), is
    accepted; in the latter, only what that demo recorded as its own is replaced, and a name
    the demo writes that it did not record is refused."""
    if out.exists() and not out.is_dir():
        return [f"--out {out}: exists and is not a folder; choose a new folder"]
    if not out.is_dir():
        return []
    try:
        previous = previous_entries(out)
    except RunError as err:
        return [str(err)]
    if previous is None:
        return [f"--out {out}: not empty and not a previous demo; choose a new folder"] if any(out.iterdir()) else []
    problems = [f"--out {out}: holds {name}, which the previous demo there did not write; move it away or choose a "
                f"new folder" for name in entries if (out / name).exists() and name not in previous]
    for name in previous:
        foreign = foreign_files(out, name)
        if foreign:
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            problems.append(f"--out {out}: {', '.join(foreign[:3])}{more} in {name}/ were not written by the previous "
                            f"demo, and a new demo replaces {name}/; move them away or choose a new folder")
    return problems


def foreign_files(out: Path, name: str) -> list[str]:
    """Files under ``out/name``, an entry a previous demo wrote, that none of seas's commands
    wrote (a user's notes, a file added to its run or evaluation), relative to ``out``. Each
    folder is judged by its owner: the run folder, the generated folder, the evaluation."""
    from seas.evaluation.evaluate import foreign_names
    from seas.generation.generated import GeneratedFolder
    from seas.run import RunFolder

    folder = out / name
    if name == "run" and folder.is_dir():
        run = RunFolder(folder)
        found = [f"run/{n}" for n in run.foreign_names()]
        found += [f"run/generated/{n}" for n in GeneratedFolder(run.generated).foreign_files()]
        found += [f"run/evaluation/{n}" for n in foreign_names(run.evaluation)]
        return found
    if name == "evaluation":
        return [f"evaluation/{n}" for n in foreign_names(folder)]
    return []  # the synthetic product (data/) and the adapted base (base/) are the demo's whole


def prepare_out(out: Path, entries: list[str]) -> None:
    """Make ``out`` ready once it passed :func:`out_problems`: the marker, listing what this
    demo writes, goes first; then what a previous demo there wrote is removed (nothing else)."""
    previous = (previous_entries(out) or []) if out.is_dir() else []
    out.mkdir(parents=True, exist_ok=True)
    listed = [*entries, *(n for n in previous if n not in entries)]  # a stop during removal is re-run safely
    write_json(out / DEMO_MARKER, {"format": DEMO_FORMAT, "status": "running", "created": listed})
    for name in previous:
        remove_path(out / name)
    remove_temporaries(out)


def demo_problems(out: Path, cfg: DemoConfig, data_cfg: DataConfig | None, sources: tuple = (),
                  product: dict | None = None) -> list[str]:
    """Every problem of a demo before its first stage: the user's dataset (all its images and
    masks decoded, the test split's included, with anomaly images held out for testing) or the
    synthetic product's few-shot count (with the dataset options ``product``), ``--out``
    against the dataset (and any further ``sources``, e.g. the YAML description), the folder
    itself (a previous demo's, holding nothing a re-run would delete that the demo did not write),
    its permissions and free space."""
    from seas.data.readers import dataset_folder
    from seas.data.split import check_dataset, held_out_anomaly_problem

    problems = ProblemList()
    nested = []
    if data_cfg is not None:
        split, _ = check_dataset(data_cfg, problems, decode="all")
        if split is not None:  # the evidence and the evaluation test on held-out anomalies
            problems.extend(filter(None, [held_out_anomaly_problem(
                split, f"--data {data_cfg.root}", "the demo's evidence and evaluation need some: add anomaly images "
                "(at least 2 per type) or lower --train-per-type")]))
        for source in (dataset_folder(data_cfg), *sources):
            nested = nested or nested_problems(out, source)  # one line says it
        problems.extend(nested)
    else:
        per_type = product_data_config(".", cfg, product).train_per_type  # None: the --train-fraction rule
        if per_type is not None and per_type >= cfg.n_per_type:
            problems.add(f"--train-per-type {per_type}: the synthetic product has {cfg.n_per_type} images of each "
                         f"type, so none would be held out for testing; give at most {cfg.n_per_type - 1}")
    if not nested:  # else the folder's contents are the dataset's: no more to say
        problems.extend(out_problems(out, demo_entries(data_cfg is None, cfg.adapt_steps > 0)))
    with problems.collect():
        check_base(cfg.base)
        multiple = base_size_multiple(cfg.base)
        if multiple and cfg.resolution % multiple:
            problems.add(f"--resolution {cfg.resolution}: must be a multiple of {multiple} for --base {cfg.base} "
                         f"(e.g. {max(multiple, round(cfg.resolution / multiple) * multiple)})")
    if cfg.adapter == "lora":
        from seas.model.adapter import require_peft

        with problems.collect():
            require_peft()
    problems.extend(output_folder_problems(out, DEMO_BYTES))
    return problems.items


def run_demo(out: str | Path, cfg: DemoConfig, data_cfg: DataConfig | None = None, sources: tuple = (),
             product: dict | None = None) -> dict:
    """Run every stage into ``out``; return the metrics written to ``out/evaluation``. Without
    ``data_cfg`` the demo writes the synthetic product, with the dataset options ``product``.

    Everything is checked first (:func:`demo_problems`, every problem in one list); nothing
    is written or deleted before. ``sources``: further paths ``out`` must not hold."""
    from seas.evaluation.config import EvalConfig
    from seas.evaluation.evaluate import evaluate_run
    from seas.evaluation.localisation import attention_localisation, mask_head_localisation
    from seas.generation.folder import generate_to_folder
    from seas.run import Run
    from seas.training.bootstrap import bootstrap_backbone
    from seas.training.configs import BootstrapConfig
    from seas.training.stage1 import train_generator
    from seas.training.stage2 import train_mask_head

    out = Path(out).resolve()
    problems = demo_problems(out, cfg, data_cfg, sources, product)
    if problems:
        raise Problems(problems)
    entries = demo_entries(data_cfg is None, cfg.adapt_steps > 0)
    prepare_out(out, entries)
    clock = StageClock()
    with clock.stage("data"):
        if data_cfg is None:
            data_cfg = write_demo_product(out / "data", cfg, product)
    base = cfg.base
    if cfg.adapt_steps:
        with clock.stage("adapting the base to the product"):
            adapt = BootstrapConfig(base=cfg.base, resolution=cfg.resolution, vae_steps=0, unet_steps=cfg.adapt_steps,
                                    generic_defects=0.0, seed=cfg.seed)
            base = str(bootstrap_backbone(data_cfg, adapt, out / "base"))
    run_dir = out / "run"
    with clock.stage("stage 1: SeaS fine-tuning"):
        lora = cfg.adapter == "lora"
        train_cfg = TrainConfig(base=base, resolution=cfg.resolution, steps=cfg.train_steps, grad_accum=1,
                                lr_unet=cfg.lora_lr if lora else cfg.lr_unet, lr_text=cfg.lr_text, seed=cfg.seed,
                                adapter=cfg.adapter, lora_rank=cfg.lora_rank, save_dtype=cfg.save_dtype,
                                checkpoint_every=max(cfg.train_steps // 2, 1))
        train_generator(data_cfg, train_cfg, run_dir)
    with clock.stage("stage 2: mask head"):
        train_mask_head(run_dir, MaskConfig(steps=cfg.mask_head_updates, grad_accum=1, timesteps="low", seed=cfg.seed,
                                            checkpoint_every=max(cfg.mask_head_updates // 2, 1)))
    run = Run.load(run_dir)
    kinds = demo_kinds(run.types)
    with clock.stage("generation"):
        gen_cfg = GenerationConfig(num=cfg.num_per_kind, seed=cfg.seed, steps=cfg.sample_steps, placement=cfg.placement,
                                   qc=cfg.qc, reference_stats=cfg.reference_stats)
        generated = generate_to_folder(run, None, kinds, gen_cfg, device="cpu")
    with clock.stage("evidence on held-out real images"):
        backbone = run.load_backbone()
        evidence = (attention_localisation(run, backbone, run.split.test)
                    | mask_head_localisation(run, backbone, run.load_mask_head(), run.split.test))
    with clock.stage("downstream evaluation"):
        eval_cfg = EvalConfig(segmenter=cfg.segmenter, size=cfg.seg_size, steps=cfg.seg_steps, width=cfg.seg_width,
                              seed=cfg.seed, device="cpu", quality=None, quality_size=cfg.seg_size)
        extra = {
            "Evidence of learning (held-out real test split)": evidence,
            "Demo settings": dataclasses.asdict(cfg),
        }
        metrics = evaluate_run(run_dir, generated, out / "evaluation", eval_cfg, extra=extra)
    metrics["stage_seconds"] = clock.seconds
    write_json(out / DEMO_MARKER, {"format": DEMO_FORMAT, "status": "finished", "created": entries,
                                   "config": dataclasses.asdict(cfg), "product_options": product or {},
                                   "stage_seconds": clock.seconds,
                                   "evidence": evidence})
    print_summary(out, metrics, evidence, clock.seconds)
    return metrics


def print_summary(out: Path, metrics: dict, evidence: dict, seconds: dict) -> None:
    print()
    print(f"attention-map pixel AUROC on held-out real anomalies: {evidence['attention_pixel_auroc']:.3f}")
    print(f"mask head on held-out real images: pixel AUROC {evidence['mask_head_pixel_auroc']:.3f}, "
          f"pixel AP {evidence['mask_head_pixel_ap']:.3f}")
    for kind, counts in metrics.get("generated", {}).items():
        print(generated_line(kind, counts))
    downstream = metrics.get("downstream", {})
    for name, values in downstream.items():
        print(f"downstream {name:<16} pixel AP {values.get('pixel_ap', float('nan')):.3f}  IoU {values.get('iou', float('nan')):.3f}")
    if metrics.get("verdict"):
        print(metrics["verdict"]["sentence"])
    for line in measure_lines(metrics.get("generated_measures") or {}):
        print(line)
    lpips = metrics.get("quality", {}).get("lpips", {})
    if "skipped" in lpips:
        print(f"IC-LPIPS skipped: {lpips['skipped']}")
    elif lpips.get("comparison"):
        rows = lpips["comparison"]["mean"]
        print("IC-LPIPS around the real training anomalies: " + ", ".join(
            f"{row} {values.get('ic_lpips', float('nan')):.3f}" for row, values in rows.items()))
    print("stage timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + f"; total {sum(seconds.values()):.0f} s")
    print(f"report: {out / 'evaluation' / 'report.html'}")


def _num(value, percent: bool = False) -> str:
    """metrics.json numbers (``None`` for undefined) as short text."""
    if value is None:
        return "-"
    return f"{100 * value:.0f}%" if percent else f"{value:.2f}"


def measure_lines(measures: dict) -> list[str]:
    """Three lines on whether the generated pairs are right (``metrics.json["generated_measures"]``):
    type fidelity against chance, mask agreement with the real-only segmenter, areas in range
    with the mean areas (whole-image masks agree with a segmenter that marks everything)."""
    fid, agr, area = (measures.get(k) or {} for k in ("type_fidelity", "mask_agreement", "area_position"))
    lines = []
    if "skipped" in fid:
        lines.append(f"type fidelity skipped: {fid['skipped']}")
    elif fid:
        held_out = fid.get("real_test") or {}  # the same classifier on the held-out real test images
        real_types = f"; held-out real anomalies: {_num(held_out.get('accuracy'))}" if held_out else ""
        real_good = f" (held-out real normals: {_num(held_out.get('good_accuracy'))})" if held_out else ""
        lines.append(f"type fidelity of the generated pairs: {_num(fid.get('accuracy'))} "
                     f"(chance {_num(fid.get('chance'))}{real_types}); generated normals read as good: "
                     f"{_num(fid.get('good_accuracy'))}{real_good}")
    if "skipped" in agr:
        lines.append(f"mask agreement skipped: {agr['skipped']}")
    elif agr:
        every = agr.get("all", {})
        lines.append(f"mask agreement with the real-only segmenter: IoU {_num(every.get('mean_iou'))}, "
                     f"generated masks found {_num(every.get('found_rate'), True)}")
    if area.get("all"):
        every = area["all"]
        lines.append(f"generated mask areas in the real range: {_num(every.get('in_range_rate'), True)} "
                     f"(mean area {_num(every.get('area_mean'), True)} of the image; "
                     f"real {_num(every.get('real_area_mean'), True)})")
    return lines


def generated_line(kind: str, counts: dict) -> str:
    """``hole: 12 generated, 9 with a mask, 3 empty``: an empty mask is never counted as a mask."""
    line = f"{kind}: {counts.get('rows', 0)} generated"
    if kind == GOOD:
        return line + " (normal images, no masks)"
    if "with_mask" in counts:
        line += f", {counts['with_mask']} with a mask, {counts.get('empty_masks', 0)} empty"
    return line


def add_parsers(sub) -> None:
    from seas.cli.options import add_data_args

    p = sub.add_parser("demo", help="the whole pipeline on a CPU in minutes (synthetic product or --data)",
                       description="Write a synthetic product (or read --data), start from the pretrained base "
                       "shipped with seas (adapted to --data's normal images first), run stage 1 and stage 2, "
                       "generate every type, normal images and a mixture, measure what was learned on the held-out "
                       "real split, run the downstream evaluation and write report.html. Without --data the dataset "
                       "options that do not locate files (--guidance, --no-augment, ...) apply to the synthetic "
                       "product.")
    add_data_args(p, required=False)
    p.add_argument("--out", default="demo-out", help="output folder (default demo-out; what a previous or interrupted "
                   "demo there wrote is replaced, nothing else; must lie outside --data)")
    p.add_argument("--quick", action="store_true", help="a shortened run (64 px, a few steps per stage) to check the setup")
    d, photo = DemoConfig(), DemoConfig.photographs()
    g = p.add_argument_group("settings for larger machines and experiments (defaults: the 2-core CPU demo; "
                             f"with --data: --adapt-steps {photo.adapt_steps} --seg-size {photo.seg_size} "
                             f"--train-steps {photo.train_steps}"
                             f"{'' if photo.reference_stats else ' --no-reference-stats'})")
    DemoConfig.add_arguments(g)
    p.set_defaults(func=cmd_demo)


def demo_config(args) -> DemoConfig:
    """The demo's settings: ``--quick``, or the default for the synthetic product or for ``--data``
    (photographs), then every option given."""
    cfg = DemoConfig.quick() if args.quick else DemoConfig.photographs() if args.data else DemoConfig()
    return DemoConfig.from_dict({**cfg.to_dict(), **DemoConfig.given(args)})


def cmd_demo(args) -> int:
    from seas.cli.options import data_config

    cfg = demo_config(args)
    if args.data:
        run_demo(args.out, cfg, data_config(args), sources=(args.data,))
    else:
        run_demo(args.out, cfg, product=product_options(args))
    return 0
