"""Load the five parts of a Stable Diffusion 1.x model, or build a tiny one offline.

One entry point, :func:`load_backbone`, takes what a user writes after ``--base``:

* a diffusers folder (``model_index.json`` or ``unet/``, ``vae/``, ``text_encoder/``,
  ``tokenizer/``, ``scheduler/`` sub-folders), e.g. a local copy of SD 1.5;
* a single ``.safetensors`` / ``.ckpt`` file in the original (LDM) layout, converted by
  diffusers' own single-file loader (``config`` names a diffusers folder or hub id whose
  configs describe the file; offline users pass a local folder);
* a hub id such as ``stable-diffusion-v1-5/stable-diffusion-v1-5`` where the network allows;
* ``tiny``: a small model with the SD 1.x block structure and random weights, built from code
  (no download), written once to a cache folder (``$SEAS_HOME/backbones/tiny-v2``) and then read
  back through the same folder path: for tests;
* ``seas-tiny``: the tiny base shipped with the package, pretrained on the procedural corpus
  (``seas pretrain``; its model card lies beside the weights), checked against its SHA-256
  table on every load.

The tiny model keeps every layer SeaS touches: cross attention in down blocks 1 and 2, U-Net
up blocks 1 and 2 feeding the mask head, a VAE decoder with four up blocks (factor 8).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from seas.errors import SeasError
from seas.files.atomic import write_dir
from seas.model.shapes import VAE_FACTORS
from seas.weights import SHIPPED_BASES, seas_home, shipped_base

# Components and the classes that read them, in the diffusers folder layout.
COMPONENTS = ("tokenizer", "text_encoder", "unet", "vae", "scheduler")
TINY = "tiny"
TINY_VERSION = "tiny-v2"

# The SD 1.x training noise schedule (scaled-linear betas, 1000 steps, epsilon prediction).
SD_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    clip_sample=False,
    steps_offset=1,
)


class BackboneError(SeasError):
    """A ``--base`` that cannot be loaded; the message says why and what to do."""


@dataclass
class Backbone:
    """The parts of an SD 1.x model, plus where they came from."""

    tokenizer: object  # transformers.CLIPTokenizer
    text_encoder: torch.nn.Module  # transformers.CLIPTextModel
    unet: torch.nn.Module  # diffusers.UNet2DConditionModel
    vae: torch.nn.Module  # diffusers.AutoencoderKL
    scheduler: object  # diffusers.DDPMScheduler (training noise schedule)
    source: str  # the --base value as resolved (folder path, file path or hub id)

    @property
    def vae_factor(self) -> int:
        """Pixels per latent pixel (8 for SD 1.x)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Image sizes must be multiples of this: VAE factor x U-Net down-sampling factor."""
        return self.vae_factor * 2 ** (len(self.unet.config.down_block_types) - 1)

    def check_resolution(self, resolution: int) -> None:
        if resolution <= 0 or resolution % self.size_multiple:
            raise BackboneError(
                f"--resolution {resolution} is not a positive multiple of {self.size_multiple} "
                f"(VAE factor {self.vae_factor} x U-Net down-sampling) for backbone {self.source}; "
                f"use e.g. {max(self.size_multiple, round(resolution / self.size_multiple) * self.size_multiple)}"
            )


# ----------------------------------------------------------------------------- tiny model


def tiny_tokenizer_vocab() -> dict[str, int]:
    """Byte-level CLIP vocabulary with no merges: every byte alone and as end of word.

    Ids: 0 ``<|startoftext|>``, 1 ``<|endoftext|>``, 2..257 the 256 byte symbols (GPT-2's
    printable mapping), 258..513 the same with ``</w>``.
    """
    # GPT-2 byte -> printable unicode map: printable bytes map to themselves, others to 256+n.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for byte in range(256):
        vocab[symbols[byte]] = 2 + byte
    for byte in range(256):
        vocab[symbols[byte] + "</w>"] = 258 + byte
    return vocab


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair merges (CLIP's ``</w>`` convention) after which every word of ``words`` is one
    token: the BPE training loop, each round merging the most frequent adjacent pair (ties: the
    pair that sorts first), until no word has two symbols left. Words are lower-case ASCII."""
    pieces = {w: [*w[:-1], w[-1] + "</w>"] for w in sorted(set(words))}
    merges: list[tuple[str, str]] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for symbols in pieces.values():
            for pair in zip(symbols, symbols[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        for word, symbols in pieces.items():
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            pieces[word] = merged


def tiny_tokenizer(words: list[str] | None = None):
    """The byte-level CLIP tokenizer of :func:`tiny_tokenizer_vocab`; with ``words``, BPE merges
    (:func:`learn_merges`) make each of them one token, as SD's vocabulary does for English words,
    while any other text still splits into bytes."""
    from transformers import CLIPTokenizer

    vocab = tiny_tokenizer_vocab()
    merges = learn_merges(words) if words else []
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build_tiny_components(seed: int = 0, width: int = 32, vae_width: int | None = None,
                          latent_channels: int = 4, vae_factor: int = 8, top_attention: bool = True,
                          words: list[str] | None = None, norm_groups: int | None = None,
                          vae_norm_groups: int | None = None) -> dict:
    """Random tiny SD-1.x-shaped parts, built offline. ``width`` scales every channel count
    (``vae_width``, default ``width``, those of the VAE); ``latent_channels`` is SD 1.x's 4
    and ``vae_factor`` (pixels per latent cell along a side, 2, 4 or 8) SD 1.x's 8 unless asked
    otherwise (the U-Net's input and output follow the channels; its latent grows with a
    smaller factor).

    ``top_attention=False`` drops the transformers of the U-Net's outermost blocks (down block 0,
    up block 3; SD 1.x has them): SeaS reads none of them (L_DA uses down blocks 1 and 2, the
    mask head up blocks 1 and 2), and their self-attention over every latent cell is half of an
    update's time at a 32 x 32 latent on a CPU. ``words``: see :func:`tiny_tokenizer`.

    ``norm_groups`` / ``vae_norm_groups``: GroupNorm groups of the U-Net / VAE (default: SD's 32
    where the width allows, ``gcd(32, width)``). At width 32 (or a VAE width of 16) that default
    is one channel per group, an instance norm that removes each channel's mean per image: a
    decoder built so cannot carry an image's colour through its norms (seas-tiny's VAE drew the
    demo's beige tile grey). SD has 4 to 16 channels per group; seas-tiny uses 8 and 4 groups."""
    if vae_factor not in VAE_FACTORS:
        raise ValueError(f"vae_factor {vae_factor}: must be one of {VAE_FACTORS}")
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(words)
    text_dim = 2 * width
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=text_dim,
            intermediate_size=4 * text_dim,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    # SD 1.x block structure: 3 cross-attention down blocks + 1 plain, mirrored on the way up.
    # One attention head per 32 channels (diffusers' attention_head_dim is a head count here):
    # SD's 8 heads at these widths would be 4-dimensional, and twice as slow on a CPU.
    channels = (width, 2 * width, 4 * width, 4 * width)
    outer_down, outer_up = ("CrossAttnDownBlock2D", "CrossAttnUpBlock2D") if top_attention else ("DownBlock2D", "UpBlock2D")
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=(outer_down,) + ("CrossAttnDownBlock2D",) * 2 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 2 + (outer_up,),
        block_out_channels=channels,
        layers_per_block=2,
        attention_head_dim=tuple(max(1, c // 32) for c in channels),
        cross_attention_dim=text_dim,
        norm_num_groups=norm_groups or math.gcd(32, width),  # SD's 32 groups where the width allows
    )
    v = vae_width or width
    blocks = vae_factor.bit_length()  # 8 -> 4 blocks (3 downsamplings, SD 1.x), 4 -> 3, 2 -> 2
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=(v,) + (2 * v,) * (blocks - 1),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=vae_norm_groups or math.gcd(32, v),
        sample_size=256,
    )
    scheduler = DDPMScheduler(**SD_SCHEDULER_CONFIG)
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, unet=unet, vae=vae, scheduler=scheduler)


def quiet_log_variance(vae) -> None:
    """Start a random VAE's log-variance at -10 (std 0.007): a random encoder's variance of 1
    would drown the latents in noise and leave the decoder nothing to learn from for hundreds
    of updates; trained SD VAEs have small variances too."""
    with torch.no_grad():
        latent = vae.config.latent_channels
        vae.quant_conv.weight[latent:] = 0.0
        vae.quant_conv.bias[latent:] = -10.0


def model_index() -> dict:
    """diffusers' ``model_index.json`` of an SD 1.x folder, so that ``StableDiffusionPipeline``
    (and this module) load it; no safety checker."""
    import diffusers

    return {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDPMScheduler"], "safety_checker": [None, None],
        "feature_extractor": [None, None], "requires_safety_checker": False,
    }


def save_components(components: dict, folder: Path) -> Path:
    """Write parts in the diffusers folder layout, atomically (temporary folder, then rename)."""

    def save(tmp: Path) -> None:
        for name in COMPONENTS:
            components[name].save_pretrained(tmp / name)
        (tmp / "model_index.json").write_text(json.dumps(model_index(), indent=2))

    return write_dir(Path(folder), save)


def tiny_cache_dir() -> Path:
    """Where ``--base tiny`` is materialised: ``$SEAS_HOME/backbones/tiny-v2``."""
    return seas_home() / "backbones" / TINY_VERSION


def write_tiny_backbone(folder: Path | None = None, seed: int = 0, width: int = 32) -> Path:
    """Build the tiny model and write it as a diffusers folder (default: the cache folder)."""
    folder = Path(folder) if folder is not None else tiny_cache_dir()
    return save_components(build_tiny_components(seed=seed, width=width), folder)


# ----------------------------------------------------------------------------- loading


def resolve_base(base: str) -> str:
    """Turn ``tiny`` into its cache folder (writing it on first use) and a shipped base's name
    (``seas-tiny``) into its verified folder; other values unchanged."""
    if base in SHIPPED_BASES:
        return str(shipped_base(base))
    if base == TINY:
        folder = tiny_cache_dir()
        if not (folder / "model_index.json").exists():
            write_tiny_backbone(folder)
        return str(folder)
    return base


def load_backbone(
    base: str,
    config: str | None = None,
    torch_dtype: torch.dtype = torch.float32,
    local_files_only: bool | None = None,
) -> Backbone:
    """Load tokenizer, text encoder, U-Net, VAE and DDPM scheduler of an SD 1.x model.

    ``base``: a diffusers folder, a ``.safetensors``/``.ckpt`` file, a hub id, or ``tiny``.
    ``config``: for a single file, a diffusers folder or hub id giving the configs.
    ``local_files_only``: defaults to ``HF_HUB_OFFLINE`` being set.
    """
    source = resolve_base(base)
    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
    path = Path(source)
    if path.is_dir():
        parts = _load_folder(path, torch_dtype)
    elif path.suffix in (".safetensors", ".ckpt"):
        if not path.is_file():
            raise BackboneError(f"--base {base}: file not found; give an existing .safetensors/.ckpt file")
        parts = _load_single_file(path, config, torch_dtype, local_files_only)
    elif path.exists() or source.startswith((".", "/", "~")):
        raise BackboneError(
            f"--base {base}: not a diffusers folder (no model_index.json or unet/) and not a "
            ".safetensors/.ckpt file; point it at an SD 1.x model folder or file, or use 'tiny'"
        )
    else:
        parts = _load_hub(source, torch_dtype, local_files_only)
    return Backbone(source=str(source), **parts)


def _load_folder(path: Path, torch_dtype: torch.dtype) -> dict:
    missing = [name for name in COMPONENTS if not (path / name).is_dir()]
    if missing:
        raise BackboneError(
            f"--base {path}: missing sub-folder(s) {', '.join(missing)}; a diffusers SD 1.x folder "
            "holds tokenizer/, text_encoder/, unet/, vae/ and scheduler/"
        )
    return _from_pretrained(str(path), torch_dtype, local_files_only=True)


def _from_pretrained(root: str, torch_dtype: torch.dtype, local_files_only: bool) -> dict:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    kw = dict(local_files_only=local_files_only)
    return dict(
        tokenizer=CLIPTokenizer.from_pretrained(root, subfolder="tokenizer", **kw),
        text_encoder=CLIPTextModel.from_pretrained(root, subfolder="text_encoder", dtype=torch_dtype, **kw),
        unet=UNet2DConditionModel.from_pretrained(root, subfolder="unet", torch_dtype=torch_dtype, **kw),
        vae=AutoencoderKL.from_pretrained(root, subfolder="vae", torch_dtype=torch_dtype, **kw),
        scheduler=DDPMScheduler.from_pretrained(root, subfolder="scheduler", **kw),
    )


def _load_hub(repo_id: str, torch_dtype: torch.dtype, local_files_only: bool) -> dict:
    try:
        return _from_pretrained(repo_id, torch_dtype, local_files_only)
    except OSError as err:
        raise BackboneError(
            f"--base {repo_id}: could not load it from the hub or the local cache ({type(err).__name__}); "
            "download the model folder where a network is available and pass its path"
        ) from None


def _load_single_file(path: Path, config: str | None, torch_dtype: torch.dtype, local_files_only: bool) -> dict:
    """Convert an original-layout SD 1.x checkpoint with diffusers' single-file loader.

    A local ``config`` folder is read part by part (its sub-folders' configs): the pipeline-level
    loader only loads the parts listed in ``model_index.json``, which folders written by
    :func:`save_components` (and folders without that file) do not list.
    """
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    hint = "pass --base-config with a local SD 1.x diffusers folder" if config is None else "check --base-config"
    try:
        if config is not None and Path(config).is_dir():
            return _single_file_with_folder(path, config, torch_dtype)
        pipe = StableDiffusionPipeline.from_single_file(
            str(path),
            config=config,
            torch_dtype=torch_dtype,
            local_files_only=local_files_only,
            safety_checker=None,
            requires_safety_checker=False,
        )
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BackboneError(f"--base {path}: could not convert the single file ({reason}); {hint}") from None
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    return dict(
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        unet=pipe.unet,
        vae=pipe.vae,
        scheduler=scheduler,
    )


def _single_file_with_folder(path: Path, folder: str, torch_dtype: torch.dtype) -> dict:
    """U-Net, VAE and text encoder converted from the file; tokenizer and scheduler from ``folder``."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm, load_single_file_checkpoint
    from transformers import CLIPTextModel, CLIPTokenizer

    checkpoint = load_single_file_checkpoint(str(path), local_files_only=True)
    kw = dict(config=folder, torch_dtype=torch_dtype, local_files_only=True)
    return dict(
        tokenizer=CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True),
        text_encoder=create_diffusers_clip_model_from_ldm(CLIPTextModel, checkpoint, subfolder="text_encoder", **kw),
        unet=UNet2DConditionModel.from_single_file(checkpoint, subfolder="unet", **kw),
        vae=AutoencoderKL.from_single_file(checkpoint, subfolder="vae", **kw),
        scheduler=DDPMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True),
    )


def load_vae(base: str, config: str | None = None, torch_dtype: torch.dtype = torch.float32):
    """Only the VAE of a base model (what a finished run borrows from its base)."""
    from diffusers import AutoencoderKL

    source = resolve_base(base)
    path = Path(source)
    if path.suffix in (".safetensors", ".ckpt"):
        return load_backbone(source, config, torch_dtype).vae
    local = path.is_dir()
    if local and not (path / "vae").is_dir():
        raise BackboneError(f"{path}: the base model recorded by the run has no vae/ folder any more; restore it")
    try:
        return AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=torch_dtype, local_files_only=local)
    except OSError as err:
        raise BackboneError(f"{source}: cannot load the base VAE ({type(err).__name__}); make the base model available") from None
