"""Import a model trained with the authors' code as a run folder of ours.

The authors' release writes a generation checkpoint folder (diffusers sub-folders ``unet/``,
``text_encoder/``, ``tokenizer/``, sometimes ``scheduler/``) and a mask head ``rmp`` (one
PyTorch state dict in the reference key layout, spec section 5). :func:`import_official` turns
the pair into a finished run (stage 1 and 2, see :mod:`seas.run`) that generation, evaluation
and the export read like one trained here:

* U-Net, text encoder and tokenizer are the authors'; the scheduler is theirs when present,
  else the base's; the VAE is the base's (the authors never train it);
* the prompt is ``PromptSpec(types)`` with the types in the order the user gives: type k owns
  ``sks{4k+1}..sks{4k+4}``, so the order must be the one the authors trained with. The
  tokenizer must hold exactly ``ob1`` and the ``sks`` tokens of that many types;
* the data config and few-shot split come from the user's dataset, whose anomaly types must
  be the given ones;
* the mask head is our :class:`~seas.model.rmp.ReferenceMaskHead` sized from the generator's
  feature widths, loaded through the fixed key map (a missing, extra or mis-shaped key is
  refused naming it).

Everything is read and checked before the output folder is created; a failure while writing
removes what was written. The run records where it came from in its ``versions`` mapping
(``imported_from``: generator folder, rmp file and the rmp's SHA-256).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from seas.config import MaskConfig, TrainConfig
from seas.data.config import DataConfig
from seas.data.readers import dataset_folder, read_dataset
from seas.data.split import check_samples, few_shot_split
from seas.errors import ConfigError, RunError
from seas.files.atomic import file_digest, remove_path
from seas.files.checks import nested_problems
from seas.model.backbone import Backbone, load_backbone, load_vae, resolve_base
from seas.model.features import unet_feature_channels, vae_feature_channels
from seas.model.prompts import PromptSpec
from seas.model.rmp import ReferenceMaskHead, head_config_for, load_reference_state_dict
from seas.run import Run, library_versions

GENERATOR_PARTS = ("unet", "text_encoder", "tokenizer")  # required in the authors' folder
_PLACEHOLDER = re.compile(r"^(ob|sks)(\d+)$")


def import_official(
    generator: str | Path,
    rmp: str | Path,
    types: Sequence[str],
    base: str,
    data: DataConfig,
    out: str | Path,
    resolution: int = 512,
    base_config: str | None = None,
) -> Path:
    """Write the run folder ``out`` from the authors' ``generator`` folder and ``rmp`` file.

    ``types``: the anomaly types in the authors' token order. ``base``: the SD model they
    fine-tuned (a diffusers folder, a single file with ``base_config``, a hub id, or ``tiny``);
    only its VAE (and its scheduler, when the generator folder has none) is used. ``data``: the
    product's dataset (its types must be ``types``). ``resolution``: the training resolution
    recorded in the run. Raises a :class:`~seas.errors.SeasError` with one line on any problem,
    with nothing written. Returns ``out``.
    """
    out = Path(out)
    generator, rmp = Path(generator), Path(rmp)
    _check_out(out)
    nested = nested_problems(out, dataset_folder(data))  # never into the data it reads
    if nested:
        raise ConfigError(nested[0])
    spec = _prompt_spec(types)
    _check_inputs(generator, rmp)

    # the dataset: its types must be the given ones (as a set; the order is the tokens')
    samples = read_dataset(data)
    split = few_shot_split(samples, data)
    if set(split.types) != set(spec.types):
        extra = sorted(set(spec.types) - set(split.types))
        missing = sorted(set(split.types) - set(spec.types))
        problem = f"it has no type {', '.join(extra)}" if extra else f"it also has {', '.join(missing)}"
        raise ConfigError(f"--types {','.join(spec.types)}: the dataset {data.root} has types "
                          f"{', '.join(split.types)} ({problem}); give exactly the dataset's types, in the "
                          f"authors' token order")
    check_samples([s for v in split.train.values() for s in v] + split.normal_train, data.mask_rule)

    # the generator: the authors' parts, the base's VAE (and scheduler if they have none)
    source = resolve_base(base)
    cfg = TrainConfig(base=source, base_config=base_config, resolution=resolution,
                      tokens_per_type=spec.tokens_per_type, normal_tokens=spec.normal_tokens)
    backbone = _load_generator(generator, source, base_config)
    backbone.check_resolution(resolution)
    _check_tokens(backbone, spec, generator)

    # the mask head, in the reference layout
    head = ReferenceMaskHead(**head_config_for(unet_feature_channels(backbone.unet),
                                               vae_feature_channels(backbone.vae)))
    load_reference_state_dict(head, _read_state_dict(rmp), source=str(rmp))

    versions = library_versions()
    versions["imported_from"] = {"generator": str(generator.resolve()), "rmp": str(rmp.resolve()),
                                 "rmp_sha256": file_digest(rmp)}
    data = dataclasses.replace(data, fit="crop", channels="rgb")  # how the authors' code prepares images
    run = Run(path=out, base=source, data=data, train=cfg, prompt=spec, split=split, versions=versions)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        run.write_split()
        run.save_generator({"unet": backbone.unet, "text_encoder": backbone.text_encoder,
                            "tokenizer": backbone.tokenizer, "scheduler": backbone.scheduler})
        run.save_mask_head(head.eval(), MaskConfig(), steps=0)
    except BaseException:
        if created:
            remove_path(out)
        elif out.is_dir():
            for item in out.iterdir():
                remove_path(item)
        raise
    return out


# ----------------------------------------------------------------------------- checks


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not an empty folder; choose a new folder for the imported run")


def _prompt_spec(types: Sequence[str]) -> PromptSpec:
    types = [str(t).strip() for t in types]
    if not types or any(not t for t in types):
        raise ConfigError("--types: name the anomaly types separated by commas, in the authors' token order, "
                          "e.g. --types hole,scratch,stain")
    if len(set(types)) != len(types):
        twice = next(t for t in types if types.count(t) > 1)
        raise ConfigError(f"--types: type {twice} is named twice; name each type once")
    return PromptSpec(types)


def _check_inputs(generator: Path, rmp: Path) -> None:
    if not generator.is_dir():
        raise RunError(f"--generator {generator}: no such folder; give the authors' checkpoint folder "
                       f"(with unet/, text_encoder/, tokenizer/)")
    missing = [name for name in GENERATOR_PARTS if not (generator / name).is_dir()]
    if missing:
        raise RunError(f"--generator {generator}: no {', '.join(m + '/' for m in missing)} sub-folder; give the "
                       f"authors' checkpoint folder (diffusers layout: unet/, text_encoder/, tokenizer/)")
    if not rmp.is_file():
        raise RunError(f"--rmp {rmp}: no such file; give the authors' mask-head state dict (the file named rmp)")


def _load_generator(generator: Path, base: str, base_config: str | None) -> Backbone:
    """The authors' U-Net, text encoder, tokenizer (and scheduler), with the base's VAE."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    root = str(generator)
    try:
        parts = dict(
            tokenizer=CLIPTokenizer.from_pretrained(root, subfolder="tokenizer", local_files_only=True),
            text_encoder=CLIPTextModel.from_pretrained(root, subfolder="text_encoder", dtype=torch.float32,
                                                       local_files_only=True),
            unet=UNet2DConditionModel.from_pretrained(root, subfolder="unet", torch_dtype=torch.float32,
                                                      local_files_only=True),
        )
        scheduler = None
        if (generator / "scheduler").is_dir():
            scheduler = DDPMScheduler.from_pretrained(root, subfolder="scheduler", local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RunError(f"--generator {generator}: cannot load it as a diffusers SD 1.x checkpoint "
                       f"({message})") from None
    vae = load_vae(base, base_config)
    if scheduler is None:
        if Path(base).is_dir() and (Path(base) / "scheduler").is_dir():
            scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler", local_files_only=True)
        else:
            scheduler = load_backbone(base, base_config).scheduler
    backbone = Backbone(source=base, vae=vae, scheduler=scheduler, **parts)
    unet, text, vae_cfg = backbone.unet.config, backbone.text_encoder.config, backbone.vae.config
    if unet.cross_attention_dim != text.hidden_size:
        raise RunError(f"--generator {generator}: its U-Net expects text features of width {unet.cross_attention_dim} "
                       f"but its text encoder gives {text.hidden_size}; the folder mixes two models")
    if unet.in_channels != vae_cfg.latent_channels:
        raise RunError(f"--base {base}: its VAE has {vae_cfg.latent_channels} latent channels but the generator's "
                       f"U-Net takes {unet.in_channels}; give the base model the authors fine-tuned")
    return backbone


def _check_tokens(backbone: Backbone, spec: PromptSpec, generator: Path) -> None:
    """The tokenizer must hold exactly the placeholder tokens of ``spec`` (ob1, sks1..sks4K)."""
    vocab = backbone.tokenizer.get_vocab()
    held = {name for name in vocab if _PLACEHOLDER.match(name)}
    needed = spec.all_token_names
    where = f"--generator {generator}: its tokenizer"
    if spec.normal_token_names[0] not in vocab:
        raise RunError(f"{where} has no token {spec.normal_token_names[0]!r}; it is not a SeaS generator checkpoint")
    n_sks = len({name for name in held if name.startswith("sks")})
    n_types = len(spec.types)
    if n_sks != n_types * spec.tokens_per_type:
        guess = (f"{n_sks // spec.tokens_per_type} types" if n_sks % spec.tokens_per_type == 0
                 else f"{n_sks} anomaly tokens")
        raise RunError(f"{where} holds {n_sks} anomaly tokens (sks*), i.e. {guess} of {spec.tokens_per_type} "
                       f"tokens, but --types names {n_types} ({','.join(spec.types)}); give every type the authors "
                       f"trained, in their order")
    for kind in spec.types:
        for name in spec.type_token_names(kind):
            if name not in vocab:
                raise RunError(f"{where} has no token {name!r} (type {kind}); it was trained with other tokens")
    rows = backbone.text_encoder.get_input_embeddings().weight.shape[0]
    top = max(vocab[name] for name in needed)
    if top >= rows:
        raise RunError(f"--generator {generator}: its text encoder has {rows} token embeddings but the tokenizer's "
                       f"token ids reach {top}; the folder mixes two models")


def _read_state_dict(rmp: Path) -> Mapping[str, torch.Tensor]:
    try:
        state = torch.load(rmp, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle and zip readers raise many kinds
        text = str(err)
        if "WeightsUnpickler error:" in text:  # torch's advice to load unsafely is not ours to give
            lines = [line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines()]
            reason = next((line for line in lines if line), "unsupported content").split(". Please")[0]
            raise RunError(f"--rmp {rmp}: not a plain state dict of tensors ({reason}); it is read with "
                           f"torch.load(weights_only=True); give the authors' rmp file") from None
        message = text.strip().splitlines()[0] if text.strip() else type(err).__name__
        raise RunError(f"--rmp {rmp}: cannot read it as a PyTorch state dict ({message})") from None
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise RunError(f"--rmp {rmp}: holds a {type(state).__name__}, not a state dict (a mapping of names to "
                       f"tensors); give the authors' rmp file")
    return state
