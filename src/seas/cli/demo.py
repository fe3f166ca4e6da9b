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
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from seas.config import PLACEMENTS, QC_MODES, MaskConfig, TrainConfig
from seas.data.config import DataConfig
from seas.data.readers import GOOD
from seas.errors import ConfigError, RunError
from seas.files.atomic import read_json, remove_path, remove_temporaries, write_json
from seas.files.checks import ProblemList, Problems, nested_problems, output_folder_problems
from seas.model.backbone import VAE_FACTORS
from seas.training.bootstrap import BootstrapConfig, bootstrap_backbone

DEMO_MARKER = "demo.json"  # written first (what the demo will create), rewritten last
DEMO_FORMAT = "seas-demo-2"
LEGACY_ENTRIES = ("base", "run", "evaluation")  # a marker without "created" (written by earlier versions)
DEMO_BYTES = 400 * 2**20  # rough: tiny base ~35 MB, the run's export and checkpoints, outputs


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
    vae_factor: int = 8  # pixels per latent cell along a side (SD 1.x: 8)
    unet_width: int = 32  # tiny U-Net channels (w, 2w, 4w, 4w) and text width 2w
    generic_defects: float = 0.5  # share of bootstrap images with a generic drawn, captioned defect
    empty_captions: float = 0.0  # share of bootstrap U-Net images captioned with the empty prompt
    # stage 1 (a tiny model trained for minutes needs larger steps than SD's 4e-6 / 4e-5)
    train_steps: int = 400
    lr_unet: float = 2e-4
    lr_text: float = 2e-3
    # stage 2
    mask_head_updates: int = 80
    # generation
    num_per_kind: int = 12
    sample_steps: int = 20
    placement: str = "free"  # SeaS as published; real-masks / masks are seas generate --placement
    qc: str = "off"  # seas generate --qc
    # downstream evaluation (a small U-Net segmenter at 96 px; at 150 updates its real-only pixel
    # AP ranged 0.05 to 0.59 over three seeds, at 400 it is a judge worth reading: docs/ABLATION.md)
    segmenter: str = "unet"
    seg_steps: int = 400
    seg_size: int = 96
    seg_width: float = 0.25

    @classmethod
    def photographs(cls) -> "DemoConfig":
        """The default for ``--data``: a downstream judge that can learn real photographs' small
        defects (on magnetic-tile, real-only pixel AUROC 0.82 / AP 0.51 at 192 px and 400
        updates; docs/ABLATION.md)."""
        return cls(seg_size=192)

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


def write_demo_product(folder: Path, cfg: DemoConfig) -> DataConfig:
    """Write the demo's synthetic product (a tile, MVTec layout, seeded by ``cfg.seed``) into
    ``folder``; return its data config."""
    from seas.data.synthetic import write_synthetic_product

    root = write_synthetic_product(folder, product="tile", seed=cfg.seed, size=cfg.resolution,
                                   n_train_good=cfg.n_train_good, n_test_good=cfg.n_test_good, n_per_type=cfg.n_per_type)
    return DataConfig(root=str(root), layout="mvtec")


def demo_kinds(types: list[str]) -> list[str]:
    """What the demo generates: every type, normal images and a mixture of the first two types."""
    return [*types, GOOD] + (["+".join(types[:2])] if len(types) > 1 else [])


def demo_entries(synthetic: bool) -> list[str]:
    """The names a demo writes into its ``--out`` (besides its marker ``demo.json``)."""
    return (["data"] if synthetic else []) + ["base", "run", "evaluation"]


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
    return [f"--out {out}: holds {name}, which the previous demo there did not write; move it away or choose a new "
            f"folder" for name in entries if (out / name).exists() and name not in previous]


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


def demo_problems(out: Path, data_cfg: DataConfig | None, sources: tuple = ()) -> list[str]:
    """Every problem of a demo before its first stage: the user's dataset (all its images and
    masks decoded, the test split's included), ``--out`` against the dataset (and any further
    ``sources``, e.g. the YAML description), the folder itself, its permissions and free space."""
    from seas.data.readers import dataset_folder
    from seas.data.split import check_dataset

    problems = ProblemList()
    nested = []
    if data_cfg is not None:
        check_dataset(data_cfg, problems, decode="all")
        for source in (dataset_folder(data_cfg), *sources):
            nested = nested or nested_problems(out, source)  # one line says it
        problems.extend(nested)
    if not nested:  # else the folder's contents are the dataset's: no more to say
        problems.extend(out_problems(out, demo_entries(data_cfg is None)))
    problems.extend(output_folder_problems(out, DEMO_BYTES))
    return problems.items


def run_demo(out: str | Path, cfg: DemoConfig, data_cfg: DataConfig | None = None, sources: tuple = ()) -> dict:
    """Run every stage into ``out``; return the metrics written to ``out/evaluation``.

    Everything is checked first (:func:`demo_problems`, every problem in one list); nothing
    is written or deleted before. ``sources``: further paths ``out`` must not hold."""
    from seas.evaluation.evaluate import EvalConfig, evaluate_run
    from seas.evaluation.localisation import attention_localisation, mask_head_localisation
    from seas.generation.folder import generate_to_folder
    from seas.run import Run
    from seas.training.stage1 import train_generator
    from seas.training.stage2 import train_mask_head

    out = Path(out).resolve()
    problems = demo_problems(out, data_cfg, sources)
    if problems:
        raise Problems(problems)
    entries = demo_entries(data_cfg is None)
    prepare_out(out, entries)
    clock = StageClock()
    with clock.stage("data"):
        if data_cfg is None:
            data_cfg = write_demo_product(out / "data", cfg)
    with clock.stage("bootstrap base model"):
        boot = BootstrapConfig(resolution=cfg.resolution, vae_steps=cfg.vae_steps, unet_steps=cfg.unet_steps,
                               generic_defects=cfg.generic_defects, empty_captions=cfg.empty_captions,
                               vae_factor=cfg.vae_factor, width=cfg.unet_width, seed=cfg.seed)
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
    kinds = demo_kinds(run.types)
    with clock.stage("generation"):
        generate_to_folder(run_dir, run_dir / "generated", kinds, num=cfg.num_per_kind, seed=cfg.seed,
                           steps=cfg.sample_steps, device="cpu", placement=cfg.placement, qc=cfg.qc)
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
        metrics = evaluate_run(run_dir, run_dir / "generated", out / "evaluation", eval_cfg, extra=extra)
    metrics["stage_seconds"] = clock.seconds
    write_json(out / DEMO_MARKER, {"format": DEMO_FORMAT, "status": "finished", "created": entries,
                                   "config": dataclasses.asdict(cfg), "stage_seconds": clock.seconds,
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
    from seas.evaluation.segmenters import SEGMENTERS

    p = sub.add_parser("demo", help="the whole pipeline on a CPU in minutes (synthetic product or --data)",
                       description="Write a synthetic product (or read --data), bootstrap a tiny base model, run "
                       "stage 1 and stage 2, generate every type, normal images and a mixture, measure what was "
                       "learned on the held-out real split, run the downstream evaluation and write report.html.")
    add_data_args(p, required=False)
    p.add_argument("--out", default="demo-out", help="output folder (default demo-out; what a previous or interrupted "
                   "demo there wrote is replaced, nothing else; must lie outside --data)")
    p.add_argument("--quick", action="store_true", help="a shortened run (64 px, a few steps per stage) to check the setup")
    p.add_argument("--seed", type=int, default=0, help="seed of every stage (default 0)")
    d, photo = DemoConfig(), DemoConfig.photographs()
    g = p.add_argument_group("settings for larger machines and experiments (defaults: the 2-core CPU demo)")
    g.add_argument("--resolution", type=int, default=None, help=f"image size of every stage (default {d.resolution})")
    g.add_argument("--train-steps", type=int, default=None, help=f"stage-1 updates (default {d.train_steps})")
    g.add_argument("--generic-defects", type=float, default=None,
                   help=f"share of bootstrap images carrying a generic drawn defect (default {d.generic_defects}; "
                   "0: normal images only)")
    g.add_argument("--empty-captions", type=float, default=None,
                   help=f"share of bootstrap U-Net images captioned with the empty prompt, as SD's caption dropout "
                   f"(default {d.empty_captions}; 0: never)")
    g.add_argument("--vae-factor", type=int, choices=VAE_FACTORS, default=None,
                   help=f"pixels per latent cell of the bootstrapped VAE (default {d.vae_factor}, SD 1.x's; 4 keeps "
                   "more detail and gives the U-Net four times the work, docs/TRAINING.md)")
    g.add_argument("--unet-width", type=int, default=None,
                   help=f"channels of the bootstrapped tiny U-Net (w, 2w, 4w, 4w; default {d.unet_width}); 16 with "
                   "--vae-factor 4 took 1.3 times the default's time and measured worse (docs/TRAINING.md)")
    g.add_argument("--placement", choices=[p for p in PLACEMENTS if p != "masks"], default=None,
                   help=f"where generated defects go, as seas generate --placement (default {d.placement})")
    g.add_argument("--qc", choices=QC_MODES, default=None, help=f"quality control, as seas generate --qc (default {d.qc})")
    g.add_argument("--segmenter", choices=SEGMENTERS, default=None,
                   help=f"downstream judge's architecture (default {d.segmenter})")
    g.add_argument("--seg-size", type=int, default=None, help=f"downstream judge's image size (default {_default(d, photo, 'seg_size')})")
    g.add_argument("--seg-steps", type=int, default=None, help=f"downstream judge's updates (default {_default(d, photo, 'seg_steps')})")
    g.add_argument("--seg-width", type=float, default=None, help=f"downstream judge's width multiplier (default {d.seg_width})")
    p.set_defaults(func=cmd_demo)


def _default(synthetic: DemoConfig, photographs: DemoConfig, name: str) -> str:
    """A setting's default in ``--help``: ``96; 192 with --data`` where the two defaults differ."""
    a, b = getattr(synthetic, name), getattr(photographs, name)
    return f"{a}" if a == b else f"{a}; {b} with --data"


def demo_config(args) -> DemoConfig:
    """The demo's settings: ``--quick``, or the default for the synthetic product or for ``--data``
    (photographs), then every option given."""
    cfg = DemoConfig.quick() if args.quick else DemoConfig.photographs() if args.data else DemoConfig()
    names = ("seed", "resolution", "train_steps", "generic_defects", "empty_captions", "vae_factor", "unet_width",
             "placement", "qc", "segmenter", "seg_size", "seg_steps", "seg_width")
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    cfg = dataclasses.replace(cfg, **given)
    if cfg.resolution % 64:
        raise ConfigError(f"--resolution {cfg.resolution}: must be a multiple of 64 (the tiny model's factor)")
    for name in ("train_steps", "unet_width", "seg_size", "seg_steps"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: must be at least 1")
    for name in ("generic_defects", "empty_captions"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(cfg, name)}: a share between 0 and 1")
    return cfg


def cmd_demo(args) -> int:
    from seas.cli.options import data_config

    cfg = demo_config(args)
    run_demo(args.out, cfg, data_config(args) if args.data else None, sources=(args.data,) if args.data else ())
    return 0
