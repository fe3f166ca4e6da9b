"""``seas export-run``: a finished run as a plain diffusers folder that is still a SeaS run.

An adapter run (``--adapter lora``) is loaded on its base, its adapter folded into the U-Net's
weights and its token rows into the embedding matrix (``--merge``), and written as full
fine-tuning writes a run: ``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``, ``vae/``,
``model_index.json`` (so ``StableDiffusionPipeline.from_pretrained`` loads it), the record and
the split, and the mask head when stage 2 has run. A fully fine-tuned run is copied that way too,
in another precision with ``--save-dtype``. The folder is written whole or not at all.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from seas.files.atomic import write_dir
from seas.files.checks import ProblemList, nested_problems, output_folder_problems
from seas.run import MASK_DIR, MASK_FILE, Run, link_files, link_or_copy


def export_problems(run: Run, out: Path, merge: bool) -> ProblemList:
    """Every problem of an export at once, before anything is loaded or written."""
    problems = ProblemList()
    if run.has_adapter and not merge:
        problems.add(f"--run {run.path}: holds a LoRA adapter, not whole weights; add --merge to fold it into the "
                     f"base's weights")
    if not run.has_adapter and merge:
        problems.add(f"--merge: --run {run.path} has no adapter to merge (full fine-tuning: it is a diffusers "
                     f"folder already); leave out --merge to copy it, with --save-dtype to change its precision")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        problems.add(f"--out {out}: exists and is not an empty folder; choose a new folder")
    problems.extend(nested_problems(out, run.path, dataset=f"--run {run.path}", kind="run"))
    tables = run.base_weights["weights"] if run.base_weights else run.weights  # what the export holds, roughly
    problems.extend(output_folder_problems(out, sum(size for table in tables.values() for size, _ in table.values())))
    return problems


def export_run(run_dir: str | Path, out: str | Path, merge: bool = False, save_dtype: str | None = None) -> Path:
    """Write ``run_dir`` as a fully fine-tuned run into ``out`` (new or empty); return ``out``."""
    run = Run.load(run_dir)
    out = Path(out)
    export_problems(run, out, merge).raise_any()
    backbone = run.load_backbone(merge=True)
    base = str(run.base_folder()) if run.has_adapter else run.base
    train = dataclasses.replace(run.train, adapter="full", self_contained=False,
                                save_dtype=save_dtype or run.train.save_dtype)
    versions = {**run.versions, "exported_from": str(run.path.resolve())}

    def save(folder: Path) -> None:
        copy = Run(path=folder, base=base, data=run.data, train=train, prompt=run.prompt, split=run.split,
                   versions=versions)
        copy.save_generator({"unet": backbone.unet, "text_encoder": backbone.text_encoder, "vae": backbone.vae,
                             "tokenizer": backbone.tokenizer, "scheduler": backbone.scheduler})
        if run.has_mask_head:
            link_files(run.path / MASK_DIR, folder / MASK_DIR)
            link_or_copy(run.path / MASK_FILE, folder / MASK_FILE)

    if out.is_dir():
        out.rmdir()  # empty (checked): replaced whole by the finished folder
    return write_dir(out, save)
