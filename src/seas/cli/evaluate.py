"""``seas evaluate``: downstream segmentation and quality scores of a generated folder."""

from __future__ import annotations

from pathlib import Path


def add_parsers(subparsers) -> None:
    from seas.cli.options import add_deprecated
    from seas.evaluation.config import EvalConfig

    p = subparsers.add_parser(
        "evaluate", help="downstream segmentation and quality scores of generated data, with an HTML report",
        description="Train a segmenter on the real few-shot data with and without the generated pairs "
                    "(and on cut-paste and Perlin baselines), test it on the held-out split, score the "
                    "generated images (IC-LPIPS when the LPIPS weights are found, IS and KID when the "
                    "Inception-v3 weights are), judge whether the generated pairs are right (type fidelity, mask "
                    "agreement, anomaly evidence, area and position) and write metrics.json and report.html "
                    "(see docs/EVALUATION.md).")
    p.add_argument("--run", required=True, help="folder of a finished 'seas train' run")
    p.add_argument("--generated", default=None, help="folder of 'seas generate' output (default: <run>/generated)")
    p.add_argument("--out", default=None,
                   help="folder for metrics.json and report.html (default: <run>/evaluation); "
                        "a previous evaluation there is replaced, any other content refused")
    EvalConfig.add_arguments(p.add_argument_group("evaluation settings (docs/EVALUATION.md)"))
    add_deprecated(p, "--no-reuse-judge", "--no-reuse-segmenter", "reuse_segmenter", value=False)
    add_deprecated(p, "--width", "--seg-width", "width", type=float)  # --width is a model's channel count elsewhere
    # No config file to layer under the options: the parsed values are the settings.
    defaults = {name: value for name, value in EvalConfig().to_dict().items() if name != "progress"}
    p.set_defaults(func=cmd_evaluate, **defaults)


def cmd_evaluate(args) -> int:
    from seas.cli.demo import measure_lines
    from seas.cli.options import check_evaluate_inputs
    from seas.evaluation.config import EvalConfig
    from seas.evaluation.evaluate import evaluate_run
    from seas.evaluation.quality import QUALITY_FAMILIES
    from seas.run import RunFolder

    cfg = EvalConfig.from_dict(EvalConfig.given(args))
    out = Path(args.out) if args.out else RunFolder(args.run).evaluation
    check_evaluate_inputs(args.run, out, cfg.device)  # the run, its whole split, --out, --device: before training
    metrics = evaluate_run(args.run, args.generated, out, cfg)
    keys = ("image_auroc", "pixel_auroc", "pixel_ap", "pixel_f1_max", "iou")
    print(f"{'training set':<16}" + "".join(f"{k:>14}" for k in keys))
    for name, values in metrics["downstream"].items():
        print(f"{name:<16}" + "".join(f"{_percent(values[k]):>14}" for k in keys))
    print(metrics["verdict"]["sentence"])
    for line in measure_lines(metrics["generated_measures"]):
        print(line)
    for family, label in QUALITY_FAMILIES.items():
        result = metrics["quality"].get(family, {})
        if "skipped" in result:
            print(f"{label} skipped: {result['skipped']}")
        elif family == "lpips":
            _print_comparison(result.get("comparison", {}))
    print(f"metrics and report written to {out}")
    return 0


def _print_comparison(comparison: dict) -> None:
    """IC-LPIPS (mean over types) of each image set around the real training anomalies."""
    mean = comparison.get("mean", {})
    if not mean:
        return
    print(f"{'IC-LPIPS of':<16}{'whole':>14}{'anomaly':>14}   (mean over types; centres: real training anomalies)")
    for name, values in mean.items():
        print(f"{name:<16}{_number(values.get('ic_lpips')):>14}{_number(values.get('ic_lpips_anomaly')):>14}")


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"
