"""The run folder: what a trained SeaS model is on disk, and the only module that knows its files.

:class:`RunFolder` owns the folder by its path (every name in it, and the life of a training
stage there); :class:`Run` is the record of a finished stage 1 that it holds.

A finished run is a self-contained diffusers folder (it loads with the base model gone)::

    model_index.json                       diffusers' index (StableDiffusionPipeline layout)
    unet/  text_encoder/  tokenizer/       the fine-tuned generator (stage 1)
    scheduler/  vae/                       the base's training schedule and (frozen) VAE
    seas_run.json                          the Run record below; written last by stage 1, so
                                           its presence means the generator is complete
    split.json                             the few-shot split (written when stage 1 starts;
                                           the one copy of it)
    mask_head/  mask_head.json             the RMP head and its record, once stage 2 finished
    generator-state.json  mask-state.json  a stage's resolved config while it runs (resume)
    checkpoints/  logs/                    training checkpoints and TensorBoard logs
    generated/  evaluation/  segmenters/   seas generate's and seas evaluate's default outputs, and
                                           the evaluation's segmenters kept for reuse

A run trained with ``--adapter lora`` stores no U-Net or text encoder: ``adapter/adapter.safetensors``
holds the LoRA weights and the UA tokens' embedding rows, beside ``tokenizer/`` and ``scheduler/``;
the base's weights are either referred to (its path, and the size and SHA-256 of each weight file,
checked on load) or copied into ``base/`` (``--self-contained``). ``seas export-run --merge`` turns
it into a plain folder as above. ``--save-dtype`` sets the precision of the stored weights.

``seas_run.json`` holds every other fact a reader needs, each once: where the base came from,
the data config (its guidance scale and mask rule included), the stage-1 config, the prompt
(types in token order, tokens per type), library versions, and the size and SHA-256 of every
weight file (checked on load: a damaged file is one line naming it).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from seas.config import MaskConfig, TrainConfig
from seas.data.config import DataConfig
from seas.data.split import Split
from seas.errors import ConfigError, RunError
from seas.files.atomic import (
    check_file_table,
    file_digest,
    file_table,
    is_temporary,
    read_json,
    remove_path,
    remove_temporaries,
    write_dir,
    write_json,
)
from seas.model.adapter import ADAPTER_DIR, ADAPTER_FILE
from seas.model.backbone import Backbone, load_backbone, load_vae, model_index, resolve_base
from seas.model.prompts import PromptSpec
from seas.weights import SHIPPED_BASES

FORMAT = "seas-run-2"
# Every name inside a run folder, spelled here only.
RUN_FILE = "seas_run.json"
SPLIT_FILE = "split.json"
INDEX_FILE = "model_index.json"
GENERATOR_PARTS = ("unet", "text_encoder", "tokenizer", "scheduler", "vae")
BASE_COPY = "base"  # an adapter run's copy of the base's unet/, text_encoder/, vae/ (--self-contained)
WEIGHT_PARTS = ("unet", "text_encoder", "vae")  # the parts of a model with weight files
SAVE_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MASK_DIR = "mask_head"
MASK_FILE = "mask_head.json"
MASK_FORMAT = "seas-mask-2"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
GENERATED = "generated"  # seas generate's default --out
EVALUATION = "evaluation"  # seas evaluate's default --out
SEGMENTERS = "segmenters"  # the evaluation's trained downstream segmenters, kept for reuse
WEIGHT_SUFFIXES = (".safetensors", ".bin")
MARKERS = {"generator": RUN_FILE, "mask": MASK_FILE}  # written last by a stage: it finished


def state_file(stage: str) -> str:
    """The file a training stage writes when it starts: ``<stage>-state.json``."""
    return f"{stage}-state.json"


def stage_names(stage: str) -> set[str]:
    """What a stage writes into a run folder. Stage 1 starts a folder, so a folder holding
    anything else is not one of its runs; stage 2 adds to a finished run."""
    shared = {CHECKPOINTS, LOGS, state_file(stage), MARKERS[stage]}
    if stage == "generator":
        return shared | {SPLIT_FILE, *GENERATOR_PARTS, INDEX_FILE, ADAPTER_DIR, BASE_COPY}
    return shared | {MASK_DIR}


OPTIONS = {"root": "--data"}  # config keys whose command-line option has another name


def config_changes(previous: dict, current: dict) -> list[str]:
    """'--option was A, now B' for every leaf value that differs between two configs."""
    def leaves(config: dict) -> dict:
        flat = {}
        for key, value in config.items():
            flat.update(leaves(value) if isinstance(value, dict) else {key: value})
        return flat

    old, new = leaves(previous), leaves(current)
    return [f"{OPTIONS.get(key, '--' + key.replace('_', '-'))} was {old.get(key)}, now {new.get(key)}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


class RunFolder:
    """A run folder by its path: the names in it, and the life of a training stage there.

    A stage writes ``<stage>-state.json`` (its resolved config) when it starts, checkpoints
    ``checkpoints/<stage>-NNNNNN`` while it runs, and its marker (``seas_run.json``, then
    ``mask_head.json``) when it finishes. Every process checks the folder
    (:meth:`check_stage`) before anything is written; then only the main process clears and
    starts it (:meth:`start_stage`).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def logs(self) -> Path:
        return self.path / LOGS

    @property
    def generated(self) -> Path:
        return self.path / GENERATED

    @property
    def evaluation(self) -> Path:
        return self.path / EVALUATION

    @property
    def segmenters(self) -> Path:
        return self.path / SEGMENTERS

    def state(self, stage: str) -> Path:
        return self.path / state_file(stage)

    def stage_config(self, stage: str) -> dict:
        """The config the unfinished or finished ``stage`` was started with."""
        return read_json(self.state(stage))["config"]

    def checkpoint(self, stage: str, step: int) -> Path:
        return self.checkpoints / f"{stage}-{step:06d}"

    def checkpoint_dirs(self, stage: str) -> list[Path]:
        """Complete checkpoints of ``stage``, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(p for p in self.checkpoints.iterdir() if p.is_dir() and p.name.startswith(f"{stage}-"))

    def foreign_names(self) -> list[str]:
        """What in the folder seas did not write, relative, sorted: top-level names no stage or
        command owns (temporaries aside) and files in ``segmenters/`` other than kept segmenters.
        (``generated/`` and ``evaluation/`` are their owners' to judge.)"""
        if not self.path.is_dir():
            return []
        owned = stage_names("generator") | stage_names("mask") | {GENERATED, EVALUATION, SEGMENTERS}
        foreign = [p.name for p in self.path.iterdir() if p.name not in owned and not is_temporary(p.name)]
        if self.segmenters.is_dir():
            foreign += [f"{SEGMENTERS}/{p.name}" for p in self.segmenters.iterdir()
                        if not (p.suffix == ".safetensors" or is_temporary(p.name))]
        return sorted(foreign)

    def unfinished_reason(self) -> str:
        """Why this folder is not a finished stage-1 run, and the command that gets one (a command
        that ``seas train`` accepts for this folder)."""
        if self.state("generator").is_file():
            return (f"stage 1 has not finished here (no {RUN_FILE}); continue it with 'seas train --out {self.path} "
                    "--resume latest' and the options it was started with")
        if any(not p.name.startswith(".") for p in self.path.iterdir()):
            return (f"not a SeaS run (no {RUN_FILE}); give the --out folder of a finished 'seas train' (this folder "
                    "holds other files, so 'seas train' will not write here either)")
        return f"an empty folder, not a SeaS run; train one into it with 'seas train --out {self.path} --data ...'"

    def check_stage(self, stage: str, config: dict, resume: str | None, overwrite: bool,
                    option: str = "--out") -> None:
        """Refuse this folder for ``stage``; every process calls it before anything is written.

        * not a folder, or (stage 1) holding names stage 1 does not write: not ours;
        * finished stage (its marker exists): refused unless ``overwrite``;
        * unfinished stage: refused unless ``resume`` (then the config must match) or ``overwrite``;
        * ``--resume PATH``: a checkpoint folder taken with the same config (checked by the caller).
        """
        run = self.path
        if run.exists() and not run.is_dir():
            raise RunError(f"{option} {run}: exists and is not a folder; choose a new folder")
        if (run / MARKERS[stage]).exists() and not overwrite:
            raise RunError(f"{option} {run}: holds a finished {stage} run; choose another {option} or pass --overwrite")
        if stage == "generator" and run.is_dir():
            foreign = sorted(p.name for p in run.iterdir()
                             if p.name not in stage_names(stage) and not p.name.startswith("."))
            if foreign:
                raise RunError(f"{option} {run}: not empty and not a SeaS {stage} run (holds {', '.join(foreign[:3])}); "
                               f"choose a new folder")
        if not overwrite and self.state(stage).exists():
            if resume is None:
                raise RunError(f"{option} {run}: holds an unfinished {stage} run; pass --resume latest to continue "
                               f"it or --overwrite")
            changes = config_changes(self.stage_config(stage), config)
            if changes:
                raise RunError(f"--resume {resume}: {run} was started with other options ({'; '.join(changes)}); "
                               f"repeat the original options or choose another {option}")

    def start_stage(self, accelerator, stage: str, config: dict, overwrite: bool) -> None:
        """Once every process has checked the folder: the main process removes leftover
        temporaries (and, with ``overwrite``, the stage's checkpoints, state and marker) and
        writes the state file."""
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            self.path.mkdir(parents=True, exist_ok=True)
            remove_temporaries(self.path, self.checkpoints)
            if overwrite:
                for path in [*self.checkpoint_dirs(stage), self.path / MARKERS[stage], self.state(stage)]:
                    remove_path(path)
            write_json(self.state(stage), {"stage": stage, "config": config})
        accelerator.wait_for_everyone()


def library_versions() -> dict[str, str]:
    import diffusers
    import transformers

    import seas

    return {"seas": seas.__version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__}


@dataclass
class Run:
    """A run folder and its record (``seas_run.json``)."""

    path: Path
    base: str  # the --base it was trained from (a record only: the run does not read it)
    data: DataConfig
    train: TrainConfig
    prompt: PromptSpec
    split: Split
    versions: dict = field(default_factory=library_versions)
    weights: dict = field(default_factory=dict)  # part -> {file: [size, sha256]} of its weight files
    # an adapter run's base: {"base", "base_config", "weights": part -> {file: [size, sha256]}} (the
    # files its adapter was trained on, checked on load); empty for full fine-tuning
    base_weights: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ what it holds

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.path)

    @property
    def types(self) -> list[str]:
        """Anomaly types in token order: type k owns token group k."""
        return self.prompt.types

    @property
    def guidance(self) -> float:
        """The dataset's default guidance scale (8 MVTec AD, 2 VisA, 5 MVTec 3D AD)."""
        return float(self.data.guidance)

    @property
    def mask_rule(self) -> str:
        """How the dataset's mask files are binarised ("half" or "nonzero")."""
        return self.data.mask_rule

    @property
    def resolution(self) -> int:
        return self.train.resolution

    @property
    def product(self) -> str:
        return self.data.product_name

    @property
    def has_adapter(self) -> bool:
        return self.train.adapter != "full"

    @property
    def references(self) -> list[str]:
        """Normal training images, in split order (the start latents of generation)."""
        return [s.image for s in self.split.normal_train]

    def to_dict(self) -> dict:
        """The record ``seas_run.json`` (the split has its own file, ``split.json``)."""
        return {"format": FORMAT, "base": self.base, "data": self.data.to_dict(), "train": self.train.to_dict(),
                "prompt": self.prompt.to_dict(), "versions": self.versions, "weights": self.weights,
                **({"base_weights": self.base_weights} if self.base_weights else {})}

    # ------------------------------------------------------------------ writing (stage 1)

    def write_split(self) -> Path:
        """``split.json``, written when stage 1 starts."""
        return write_json(self.path / SPLIT_FILE, self.split.to_dict())

    def save_generator(self, parts: dict) -> None:
        """Write the generator in ``--save-dtype``, then the record (last).

        ``parts``: ``tokenizer`` and ``scheduler`` objects with ``save_pretrained``, and either
        ``unet`` and ``text_encoder`` (full fine-tuning: with the VAE and ``model_index.json`` the
        folder is a diffusers pipeline folder; an optional ``vae`` is saved instead of the base's)
        or ``adapter``, the tensors of an adapter run (:func:`seas.model.adapter.adapter_tensors`,
        already in the save dtype). The VAE, or an
        adapter run's copy of the base (``--self-contained``), is taken from the base unchanged:
        its files are hard-linked (copied across disks) from a diffusers base folder, else loaded
        and saved; in fp32 unless a half ``--save-dtype`` asks for it in half.
        """
        dtype = SAVE_TORCH_DTYPES[self.train.save_dtype]
        for name in ("tokenizer", "scheduler"):
            write_dir(self.path / name, parts[name].save_pretrained)
        if self.has_adapter:
            write_dir(self.path / ADAPTER_DIR, lambda folder: _save_tensors(parts["adapter"], folder / ADAPTER_FILE))
            if self.train.self_contained:
                write_dir(self.path / BASE_COPY, self._copy_base)
                self.weights = {f"{BASE_COPY}/{name}": _weight_table(self.path / BASE_COPY / name)
                                for name in WEIGHT_PARTS}
            else:
                self.base_weights = self._base_reference()
            self.weights[ADAPTER_DIR] = _weight_table(self.path / ADAPTER_DIR)
        else:
            for name in ("unet", "text_encoder"):
                write_dir(self.path / name, parts[name].to(dtype).save_pretrained)
            if "vae" in parts:  # a VAE already loaded (an export): saved as it is, in the save dtype
                write_dir(self.path / "vae", parts["vae"].to(dtype).save_pretrained)
            else:
                write_dir(self.path / "vae", lambda folder: self._save_base_vae(folder, dtype))
            write_json(self.path / INDEX_FILE, model_index())
            self.weights = {name: _weight_table(self.path / name) for name in WEIGHT_PARTS}
        self.save()

    def _save_base_vae(self, folder: Path, dtype: torch.dtype) -> None:
        source = Path(resolve_base(self.base)) / "vae"
        if source.is_dir() and dtype == torch.float32:
            link_files(source, folder)
            return
        load_vae(self.base, self.train.base_config).to(dtype).save_pretrained(folder)

    def _copy_base(self, folder: Path) -> None:
        """``base/``: the base's unet/, text_encoder/ and vae/, linked from a folder, else saved."""
        source = Path(resolve_base(self.train.base))
        if source.is_dir():
            for name in WEIGHT_PARTS:
                link_files(source / name, folder / name)
            return
        backbone = load_backbone(str(source), self.train.base_config)
        for name in WEIGHT_PARTS:
            getattr(backbone, name).save_pretrained(folder / name)

    def _base_reference(self) -> dict:
        """Where an adapter run's base is and the table of its weight files (by name for a base
        shipped with seas, whose installed folder may move)."""
        base = self.train.base
        source = Path(resolve_base(base))
        if source.is_dir():
            weights = {name: _weight_table(source / name) for name in WEIGHT_PARTS}
        else:
            weights = {".": {source.name: [source.stat().st_size, file_digest(source)]}}  # a single-file base
        return {"base": base if base in SHIPPED_BASES or base == "tiny" else str(source.resolve()),
                "base_config": self.train.base_config, "weights": weights}

    def save(self) -> Path:
        """Write ``split.json`` and the record ``seas_run.json`` (last), atomically."""
        self.write_split()
        return write_json(self.path / RUN_FILE, self.to_dict())

    # ------------------------------------------------------------------ reading

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> "Run":
        """The record of a finished stage-1 run; one line naming the problem otherwise.

        ``verify``: check the size and SHA-256 of every weight file against the record (for an
        adapter run that refers to its base, the base's files too).
        """
        path = Path(path)
        record = path / RUN_FILE
        if path.exists() and not path.is_dir():
            raise RunError(f"--run {path}: is a file, not a run folder; give the --out folder of a finished "
                           "'seas train'")
        if not path.is_dir():
            raise RunError(f"--run {path}: no such folder; give the --out folder of a finished 'seas train'")
        if not record.is_file():
            raise RunError(f"--run {path}: {RunFolder(path).unfinished_reason()}")
        values = read_json(record)
        if values.get("format") == "seas-run-1":
            raise RunError(f"{record}: written by seas 0.1 (format seas-run-1, no VAE of its own); "
                           f"retrain it with 'seas train' to get a self-contained run")
        if values.get("format") != FORMAT:
            raise RunError(f"{record}: unknown run format {values.get('format')!r}; it was written by another "
                           f"tool or version")
        try:
            run = cls(path=path, base=values["base"], data=DataConfig.from_dict(values["data"]),
                      train=TrainConfig.from_dict(values["train"]), prompt=PromptSpec(**values["prompt"]),
                      split=Split.from_dict(read_json(path / SPLIT_FILE)), versions=values["versions"],
                      weights=values["weights"], base_weights=values.get("base_weights", {}))
        except (KeyError, TypeError, ValueError, ConfigError) as err:
            raise RunError(f"{record}: damaged record ({type(err).__name__}: {err}); start a new run") from None
        if verify:
            run.verify(run.weights)
            run.verify_base()
        return run

    def verify(self, parts) -> None:
        """Check the weight files of ``parts`` against the record; one line naming a damaged one."""
        for part in parts:
            problem = check_file_table(self.path / part, self.weights.get(part, {}))
            if problem:
                raise RunError(f"{self.path / part / problem.split()[0]}: damaged ({problem}); "
                               f"restore it from a backup or retrain the run")

    def base_folder(self) -> Path | None:
        """An adapter run's base: its copy in ``base/``, or the base it refers to; ``None`` for
        full fine-tuning."""
        if not self.has_adapter:
            return None
        if self.train.self_contained:
            return self.path / BASE_COPY
        return Path(resolve_base(self.base_weights["base"]))

    def verify_base(self) -> None:
        """Check the base an adapter run refers to against the recorded sizes and SHA-256 of its
        weight files (what :meth:`load` does); one line naming the first that differs."""
        if not self.base_weights:
            return
        source = self.base_folder()
        for part, table in self.base_weights["weights"].items():
            problem = check_file_table(source / part if source.is_dir() else source.parent, table)
            if problem:
                raise RunError(f"--run {self.path}: its base {self.base_weights['base']} is not the one its adapter "
                               f"was trained on ({part}/{problem}); restore that base, or retrain with --self-contained")

    def load_backbone(self, torch_dtype: torch.dtype = torch.float32, merge: bool = True) -> Backbone:
        """The fine-tuned generator, the VAE and the DDPM schedule: from this folder only, or for an
        adapter run, the base's weights with the adapter applied (folded into the U-Net's weights
        with ``merge``, else kept as peft's separate low-rank branch)."""
        if not self.has_adapter:
            return load_backbone(str(self.path), torch_dtype=torch_dtype)
        from safetensors.torch import load_file
        from transformers import CLIPTokenizer

        from seas.model.adapter import apply_adapter, require_peft

        require_peft()
        source = self.base_folder()
        if source.is_dir():
            parts = _load_weight_parts(source, torch_dtype)
        else:
            base = load_backbone(str(source), self.base_weights.get("base_config"), torch_dtype)
            parts = {name: getattr(base, name) for name in WEIGHT_PARTS}
        tokenizer = CLIPTokenizer.from_pretrained(self.path / "tokenizer", local_files_only=True)
        parts["text_encoder"].resize_token_embeddings(len(tokenizer), mean_resizing=False)
        tensors = load_file(str(self.path / ADAPTER_DIR / ADAPTER_FILE))
        cfg = self.train
        apply_adapter(parts["unet"], parts["text_encoder"], tensors, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets,
                      merge=merge)
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler.from_pretrained(self.path / "scheduler", local_files_only=True)
        return Backbone(tokenizer=tokenizer, scheduler=scheduler, source=str(self.path), **parts)

    # ------------------------------------------------------------------ the mask head (stage 2)

    @property
    def has_mask_head(self) -> bool:
        return (self.path / MASK_FILE).is_file()

    def mask_record(self) -> dict:
        if not self.has_mask_head:
            raise RunError(f"--run {self.path}: has no trained mask head; run 'seas train-mask --run {self.path}' first")
        record = read_json(self.path / MASK_FILE)
        if record.get("format") != MASK_FORMAT:
            raise RunError(f"{self.path / MASK_FILE}: a mask head of another version ({record.get('format')}); "
                           f"retrain it with 'seas train-mask --run {self.path} --overwrite'")
        return record

    def mask_config(self) -> MaskConfig:
        return MaskConfig.from_dict(self.mask_record()["config"], where=str(self.path / MASK_FILE))

    def save_mask_head(self, head, cfg: MaskConfig, steps: int) -> None:
        """Write ``mask_head/`` then its record ``mask_head.json`` (last: the marker)."""
        write_dir(self.path / MASK_DIR, head.save_pretrained)
        write_json(self.path / MASK_FILE, {"format": MASK_FORMAT, "config": cfg.to_dict(), "steps": steps,
                                           "weights": _weight_table(self.path / MASK_DIR)})

    def load_mask_head(self, torch_dtype: torch.dtype = torch.float32):
        """The RMP head, in eval mode (BatchNorm running statistics); see ``set_batchnorm_mode``."""
        from seas.model.rmp import ReferenceMaskHead

        record = self.mask_record()
        problem = check_file_table(self.path / MASK_DIR, record.get("weights", {}))
        if problem:
            raise RunError(f"{self.path / MASK_DIR / problem.split()[0]}: damaged ({problem}); "
                           f"retrain it with 'seas train-mask --run {self.path} --overwrite'")
        return ReferenceMaskHead.from_pretrained(self.path / MASK_DIR, torch_dtype=torch_dtype).eval()

    def remove_mask_head(self) -> None:
        for name in (MASK_FILE, MASK_DIR):
            remove_path(self.path / name)


def _weight_table(folder: Path) -> dict:
    return {name: entry for name, entry in file_table(folder).items() if name.endswith(WEIGHT_SUFFIXES)}


def _save_tensors(tensors: dict, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True)
    save_file(tensors, str(path))


def _load_weight_parts(root: Path, torch_dtype: torch.dtype) -> dict:
    """U-Net, text encoder and VAE of a diffusers folder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    return dict(unet=UNet2DConditionModel.from_pretrained(root / "unet", torch_dtype=torch_dtype),
                text_encoder=CLIPTextModel.from_pretrained(root / "text_encoder", dtype=torch_dtype),
                vae=AutoencoderKL.from_pretrained(root / "vae", torch_dtype=torch_dtype))


def link_files(source: Path, folder: Path) -> None:
    """Hard-link (copy across disks) the files of ``source`` into a new ``folder``."""
    folder.mkdir(parents=True)
    for item in source.iterdir():
        if item.is_file():
            link_or_copy(item, folder / item.name)


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
