"""LoRA against full fine-tuning on the demo: one table from finished ablation folders.

Each argument is ``LABEL=FOLDER``, FOLDER an ``--out`` of ``benchmarks.ablation_placement`` run
with ``--variants free`` (full fine-tuning: the default; LoRA: ``--set adapter=lora lora_rank=R``).
Per label, over its seeds (mean ± sd): attention AUROC and the mask head's pixel AP on the
held-out real images, type fidelity of the generated anomalies, the downstream gain (pixel AP
of real + generated minus real only), and the run's size on disk (the run folder without its
checkpoints, logs and outputs). Time per update and peak memory come from
``benchmarks.gpu_check --shape demo`` (a separate, timed-alone run).

    OMP_NUM_THREADS=1 python -m benchmarks.ablation_placement --out ABL-lora16 --seeds 0 1 2 \\
        --variants free --set adapter=lora lora_rank=16
    python -m benchmarks.lora_table full=ABL lora-4=ABL-lora4 lora-16=ABL-lora16 lora-64=ABL-lora64
    python -m benchmarks.lora_table --sd15-sizes     # adapter sizes at SD 1.x's U-Net shape (no weights)
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from benchmarks.ablation_placement import mean_spread

OUTPUTS = {"checkpoints", "logs", "generated", "evaluation", "segmenters"}  # not part of the model


def run_bytes(run: Path) -> int:
    """Bytes of the run folder's files, outputs and checkpoints aside."""
    return sum(p.stat().st_size for p in run.rglob("*")
               if p.is_file() and p.relative_to(run).parts[0] not in OUTPUTS)


def label_row(folder: Path) -> dict:
    table = json.loads((folder / "ablation.json").read_text())
    evidence, free, real = table["evidence_rows"], table["rows"]["free"], table["rows"]["real_only"]
    gains = [f["pixel_ap"] - r["pixel_ap"] for f, r in zip(free, real)]
    sizes = [run_bytes(folder / f"seed{seed}" / "run") for seed in table["seeds"]]
    return {"seeds": len(table["seeds"]),
            "attention AUROC": mean_spread([e["attention_pixel_auroc"] for e in evidence]),
            "mask head AP": mean_spread([e["mask_head_pixel_ap"] for e in evidence]),
            "type fidelity": mean_spread([f["type_fidelity"] for f in free]),
            "pixel AP gain over real-only": mean_spread(gains),
            "run size (MiB)": mean_spread([s / 2**20 for s in sizes])}


def cell(values: tuple) -> str:
    mean, spread, count = values
    return "–" if count == 0 else f"{mean:.3f}" + ("" if math.isnan(spread) else f" ± {spread:.3f}")


def sd15_sizes(ranks=(4, 16, 64)) -> None:
    """Parameters and stored bytes of the adapter at SD 1.x's U-Net shape, built on the meta device
    (shapes only: no weights, no memory), against the whole U-Net's."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    from seas.config import TrainConfig
    from seas.model.adapter import add_lora

    print("| rank | adapter parameters | adapter fp32 | adapter fp16 | share of the U-Net's parameters |")
    print("| --- | --- | --- | --- | --- |")
    for rank in ranks:
        with init_empty_weights():
            unet = UNet2DConditionModel(cross_attention_dim=768)  # the defaults are SD 1.x's
        whole = sum(p.numel() for p in unet.parameters())
        add_lora(unet, rank, None, TrainConfig().lora_targets)  # the default targets
        n = sum(p.numel() for name, p in unet.named_parameters() if "lora_" in name)
        print(f"| {rank} | {n / 1e6:.2f} M | {4 * n / 2**20:.1f} MiB | {2 * n / 2**20:.1f} MiB | {n / whole:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", metavar="LABEL=FOLDER")
    parser.add_argument("--sd15-sizes", action="store_true", help="print the adapter sizes at SD 1.x shape")
    args = parser.parse_args()
    if args.sd15_sizes:
        sd15_sizes()
        return
    rows = {}
    for item in args.folders:
        label, _, folder = item.partition("=")
        if not folder or not (Path(folder) / "ablation.json").is_file():
            parser.error(f"{item}: give LABEL=FOLDER, FOLDER an ablation --out holding ablation.json")
        rows[label] = label_row(Path(folder))
    columns = [c for c in next(iter(rows.values())) if c != "seeds"]
    print("| stage 1 | seeds | " + " | ".join(columns) + " |")
    print("| --- " * (len(columns) + 2) + "|")
    for label, row in rows.items():
        print(f"| {label} | {row['seeds']} | " + " | ".join(cell(row[c]) for c in columns) + " |")


if __name__ == "__main__":
    main()
