"""Curves against pretraining: what the base knows after 10 %, 30 % and 100 % of ``seas pretrain``.

Two tables, from one pretraining folder (``seas pretrain --out DIR --snapshots ...``):

* **the VAE**: its round trip of the demo product's held-out real anomalies at every probe of
  ``curves.jsonl`` (PSNR, type fidelity against the originals', per type);
* **the demo on each snapshot** (``snapshots/unet-NNNNNN`` and the final ``model``): ``seas demo``
  run from that base (same seed, defaults otherwise), and from its ``metrics.json`` and
  ``demo.json``: attention-map AUROC and the mask head on the held-out real images, the type
  fidelity of the generated anomalies against the real ones', and what the generated pairs add
  to the downstream segmenter (real + generated minus real only, pixel AP and AUROC) and how they
  compare with cut-paste.

::

    OMP_NUM_THREADS=2 python -m benchmarks.pretrain_curves --pretrain /work/pretrain/seas-tiny --out /tmp/curves

A demo folder that finished is reused (delete it to redo it). Writes ``<out>/curves.md`` and
``<out>/curves.json`` and prints the tables.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from seas.cli.demo import DemoConfig, run_demo
from seas.files.atomic import read_json, write_json
from seas.training.pretrain import MODEL, SNAPSHOTS, curves


def vae_rows(pretrain: Path) -> list[dict]:
    return [r for r in curves(pretrain) if r["phase"] == "vae_probe"]


def demo_row(folder: Path) -> dict:
    """The curve's numbers of one finished demo."""
    metrics = read_json(folder / "evaluation" / "metrics.json")
    evidence = read_json(folder / "demo.json")["evidence"]
    fidelity = metrics["generated_measures"]["type_fidelity"]
    down = metrics["downstream"]

    def gain(key: str, other: str = "real_only") -> float:
        a, b = down["real+generated"].get(key), down.get(other, {}).get(key)
        return math.nan if a is None or b is None else a - b

    return {"attention_auroc": evidence["attention_pixel_auroc"], "mask_head_ap": evidence["mask_head_pixel_ap"],
            "type_fidelity": fidelity.get("accuracy"), "real_type_fidelity": fidelity.get("real_test", {}).get("accuracy"),
            "pixel_ap_gain": gain("pixel_ap"), "pixel_auroc_gain": gain("pixel_auroc"),
            "pixel_ap_vs_cut_paste": gain("pixel_ap", "cut_paste")}


def number(value, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain", type=Path, required=True, help="the --out folder of seas pretrain")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-demo", action="store_true", help="the VAE table only")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    total = read_json(args.pretrain / "pretrain.json")["config"]["unet_steps"]

    lines = ["| VAE updates | PSNR (dB) | type fidelity | per type |", "| --- | --- | --- | --- |"]
    for r in vae_rows(args.pretrain):
        per = ", ".join(f"{k} {v:.2f}" for k, v in r["per_type"].items())
        lines.append(f"| {r['update']} | {r['psnr']:.1f} | {r['type_fidelity']:.2f} | {per} |")
    demos = {}
    if not args.no_demo:
        bases = sorted((args.pretrain / SNAPSHOTS).glob("unet-*")) + [args.pretrain / MODEL]
        for base in bases:
            updates = total if base.name == MODEL else int(base.name.split("-")[1])
            folder = args.out / f"demo-{updates:06d}"
            marker = folder / "demo.json"
            if not (marker.is_file() and read_json(marker).get("status") == "finished"):
                run_demo(folder, DemoConfig(seed=args.seed, base=str(base)))
            demos[updates] = demo_row(folder)
        lines += ["", "| U-Net updates (share) | attention AUROC | mask head AP | type fidelity (real) | "
                  "pixel AP gain | pixel AUROC gain | pixel AP vs cut-paste |", "| --- " * 7 + "|"]
        for updates, r in demos.items():
            lines.append(f"| {updates} ({100 * updates / total:.0f} %) | {number(r['attention_auroc'])} | "
                         f"{number(r['mask_head_ap'])} | {number(r['type_fidelity'], 2)} "
                         f"({number(r['real_type_fidelity'], 2)}) | {number(r['pixel_ap_gain'])} | "
                         f"{number(r['pixel_auroc_gain'])} | {number(r['pixel_ap_vs_cut_paste'])} |")
    write_json(args.out / "curves.json", {"vae": vae_rows(args.pretrain), "demo": demos, "seed": args.seed})
    (args.out / "curves.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
