"""The model card of a pretrained tiny base: what it was trained on, how long, and what it keeps.

``card.json`` holds every figure; ``MODEL_CARD.md`` says the same for people. Both are written
into the exported model folder by ``seas pretrain`` and shipped with the weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from seas.data import corpus
from seas.files.atomic import file_table, write_json, write_text
from seas.weights import CARD_FILE, SHIPPED_BASES

CARD_JSON = CARD_FILE
CARD_MD = "MODEL_CARD.md"
WEIGHT_SUFFIXES = (".safetensors", ".json", ".txt")


def parameter_counts(parts: dict) -> dict[str, int]:
    return {name: sum(p.numel() for p in parts[name].parameters()) for name in ("unet", "text_encoder", "vae")}


def weight_files(folder: Path) -> dict[str, list]:
    """``[size, sha256]`` of every file of the diffusers folder (the card's own files excepted),
    by relative path: the table :func:`seas.weights.shipped_base` checks before loading."""
    return {name: entry for name, entry in file_table(folder).items() if name not in (CARD_JSON, CARD_MD)}


def init_record(init: str) -> dict:
    """What a card says of the base a continued pretraining started from (``--init``): its value,
    the size and SHA-256 of its weight files, its own card's name, date and command, and
    ``commands``: every command that made it, in order (a base continued twice lists three), and
    ``shipped_inits``: beside each, the seas version whose shipped base its ``--init`` named (or
    ``None``), so that a chain through several shipped versions can be reproduced from scratch."""
    from seas import __version__
    from seas.model.backbone import resolve_base

    folder = Path(resolve_base(init))
    files = {name: entry for name, entry in weight_files(folder).items() if name.endswith(".safetensors")}
    record = {"base": init, "files": files, "name": None, "date": None, "command": None, "commands": [],
              "shipped_inits": [], "shipped_with": __version__ if init in SHIPPED_BASES else None}
    if (folder / CARD_JSON).is_file():
        earlier = read_card(folder)
        record |= {key: earlier.get(key) for key in ("name", "date", "command")}
        record["commands"] = made_by(earlier)
        record["shipped_inits"] = shipped_inits(earlier)
    return record


def made_by(card: dict) -> list[str]:
    """The commands that reproduce ``card``'s weights, in order."""
    init = card.get("init")
    if init is None:
        return [card["command"]]
    earlier = init.get("commands") or ([init["command"]] if init.get("command") else [])
    return [*earlier, card["command"]]


def shipped_inits(card: dict) -> list[str | None]:
    """Beside each command of :func:`made_by`, the seas version whose shipped base its ``--init``
    named, or ``None`` (no ``--init``, or a folder). Cards written before this list existed
    give ``None`` for the commands before their own."""
    init = card.get("init")
    if init is None:
        return [None]
    n_earlier = len(made_by(card)) - 1
    return [*(init.get("shipped_inits") or [None] * n_earlier), init.get("shipped_with")]


def summarise_curve(rows: list[dict], phase: str, keys: tuple[str, ...], points: int = 8) -> list[dict]:
    """About ``points`` evenly spaced rows of ``phase`` (the last one included), with ``keys``."""
    mine = [r for r in rows if r["phase"] == phase]
    if not mine:
        return []
    stride = max(len(mine) // points, 1)
    picked = mine[stride - 1::stride]
    if picked[-1] is not mine[-1]:
        picked.append(mine[-1])
    return [{"update": r["update"], "seconds": r["seconds"], **{k: r[k] for k in keys if k in r}} for r in picked]


def build_card(*, name: str, cfg: dict, parts: dict, folder: Path, rows: list[dict], probe: dict,
               machine: str, command: str, date: str, init: dict | None = None) -> dict:
    seconds = {phase: max((r["seconds"] for r in rows if r["phase"] == phase), default=0.0) for phase in ("vae", "unet")}
    return {
        "name": name,
        "date": date,
        "command": command,
        "init": init,
        "machine": machine,
        "corpus": {"version": corpus.CORPUS_VERSION, "seed": cfg["corpus_seed"], "samples": cfg["corpus_size"],
                   "defect_share": cfg["defect_share"], "families": list(corpus.FAMILIES),
                   "defects": list(corpus.DEFECTS)},
        "architecture": {"resolution": cfg["resolution"], "vae_factor": cfg["vae_factor"],
                         "latent_channels": cfg["latent_channels"], "vae_width": cfg["vae_width"],
                         "unet_width": cfg["width"], "top_attention": cfg["top_attention"],
                         "parameters": parameter_counts(parts), "tokens": len(parts["tokenizer"]),
                         "scaling_factor": parts["vae"].config.scaling_factor},
        "training": {"vae_updates": cfg["vae_steps"], "vae_batch": cfg["vae_batch"], "unet_updates": cfg["unet_steps"],
                     "unet_batch": cfg["unet_batch"], "precision": cfg["precision"], "seconds": seconds,
                     "config": cfg},
        "curves": {"vae": summarise_curve(rows, "vae", ("l1", "defect_l1", "kl", "lpips")),
                   "unet": summarise_curve(rows, "unet", ("mse", "defect_mse"))},
        "vae_round_trip": probe,
        "files": weight_files(folder),
    }


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _num(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def training_lines(card: dict) -> list[str]:
    """The card's training paragraph and the command(s) that reproduce the weights."""
    train, init = card["training"], card.get("init")
    config = train["config"]
    weight = config.get("unet_defect_weight", 0.0)
    if not train["vae_updates"]:
        vae = "VAE: kept from the base it continues; "
    else:
        part = "decoder only (the encoder kept from the base it continues), " if config.get("vae_train") == "decoder" else ""
        perceptual = config.get("vae_perceptual", 0.0)
        vae = (f"VAE: {part}{train['vae_updates']} updates of {train['vae_batch']} images "
               + (f"with an LPIPS-VGG term of weight {perceptual:g} " if perceptual else "")
               + f"({train['seconds']['vae'] / 60:.0f} min); ")
    if not train["unet_updates"]:
        unet = "U-Net and text encoder: kept from the base it continues. "
    else:
        unet = (f"U-Net and text encoder: {train['unet_updates']} updates of {train['unet_batch']} "
                f"({train['seconds']['unet'] / 60:.0f} min), {train['precision']} autocast, "
                + (f"the noise-prediction error weighted {1 + weight:g}x in the latent cells a defect touches, "
                   if weight else "") + "exported as the moving average. ")
    lines = [vae + unet + f"Machine: {card['machine']}. Date: {card['date']}."]
    if init is None:
        return lines + ["", "Reproduce with:", "", f"    {card['command']}"]
    made = f", made on {init['date']} by `{init['command']}`" if init.get("command") else ""
    lines += ["", f"This run continues `{init['base']}` ({init.get('name') or 'a pretrained base'}{made}), whose weights "
              "were:", ""]
    lines += [f"    {digest}  {path}" for path, (_, digest) in init["files"].items()]
    lines += ["", "Reproduce with, in order:", ""]
    commands = made_by(card)
    lines += [f"    {command}" for command in commands]
    for number, version in enumerate(shipped_inits(card), start=1):
        if version is None:
            continue
        which, weights = ("the last command", " (its weights above)") if number == len(commands) else (
            f"command {number}", "")
        lines += ["", f"`--init` in {which} named the base shipped with seas {version}{weights}; reproducing from "
                  f"scratch, give the model folder of command {number - 1}."]
    return lines


def card_markdown(card: dict) -> str:
    arch, data = card["architecture"], card["corpus"]
    params = arch["parameters"]
    lines = [
        f"# {card['name']}: the tiny base shipped with seas",
        "",
        "A Stable-Diffusion-1.x-shaped model (VAE, CLIP text encoder, U-Net) small enough to train and run on "
        "a laptop CPU, pretrained on a procedural corpus of captioned industrial photographs so that SeaS "
        "fine-tuning starts, as with SD, from a model that already draws surfaces and defects. It is a "
        "stand-in for SD 1.x where no weights can be had (tests, the CPU demo), not a replacement.",
        "",
        "## Training data",
        "",
        f"Corpus `{data['version']}` (`seas.data.corpus`), seed {data['seed']}, {data['samples']} samples, "
        f"{100 * data['defect_share']:.0f} % with one defect and its caption: {len(data['families'])} families "
        f"({', '.join(data['families'])}) and {len(data['defects'])} defect kinds ({', '.join(data['defects'])}). "
        "Captions read `a photo of a {family} with a {defect}`; the demo's product and its defect drawings "
        "(`seas.data.synthetic`) are never in it.",
        "",
        "## Model",
        "",
        f"{arch['resolution']} px images; VAE factor {arch['vae_factor']} with {arch['latent_channels']} latent "
        f"channels (width {arch['vae_width']}, {params['vae'] / 1e6:.2f} M parameters, scaling factor "
        f"{arch['scaling_factor']:.4f}); U-Net width {arch['unet_width']} ({params['unet'] / 1e6:.2f} M; "
        f"transformers in the outermost blocks: {'yes' if arch['top_attention'] else 'no'}); text encoder "
        f"{params['text_encoder'] / 1e6:.2f} M with {arch['tokens']} tokens (bytes plus one BPE token per "
        "corpus word). Weights in fp16 safetensors.",
        "",
        "## Training",
        "",
        *training_lines(card),
        "",
        "## Loss curves",
        "",
        _row(["phase", "update", "minutes", "loss"]),
        _row(["---"] * 4),
    ]
    for phase, key in (("vae", "l1"), ("unet", "mse")):
        for r in card["curves"][phase]:
            lines.append(_row([phase, r["update"], f"{r['seconds'] / 60:.1f}", f"{key} {_num(r.get(key, float('nan')), 4)}"]))
    lines += probe_section(card["vae_round_trip"])
    lines += ["", "Why this shape and these losses: docs/PRETRAINING.md.", "",
              "## Files (SHA-256)", ""]
    lines += [f"    {digest}  {path}" for path, (_, digest) in card["files"].items()]
    return "\n".join(lines) + "\n"


def probe_section(probe: dict) -> list[str]:
    """The card's lines on what the VAE keeps (``probe``: ``originals`` and ``vae`` readings of
    :class:`seas.judge.vae_probe.VaeProbe`, or empty when not measured)."""
    lines = ["", "## What the VAE keeps of the demo product's defects", ""]
    if not probe:
        return lines + ["Not measured (`--no-probe`)."]
    lines += [
        "The held-out real test anomalies of `seas demo`'s synthetic product (seed 0), round-tripped through "
        "the VAE (encode, mean latent, decode) and read by the type classifier the evaluation uses "
        "(`seas.judge.vae_probe`):",
        "",
        _row(["images", "L1", "PSNR (dB)", "type fidelity", "read as normal", "per type"]),
        _row(["---"] * 6),
    ]
    for label, key in (("originals", "originals"), ("VAE round trip", "vae")):
        r = probe[key]
        per = ", ".join(f"{k} {v:.2f}" for k, v in r["per_type"].items())
        lines.append(_row([label, _num(r["l1"]), _num(r["psnr"], 1), _num(r["type_fidelity"], 2),
                           _num(r["good_rate"], 2), per]))
    return lines


def write_card(folder: Path, card: dict) -> None:
    write_json(folder / CARD_JSON, card)
    write_text(folder / CARD_MD, card_markdown(card))


def read_card(folder: Path) -> dict:
    return json.loads((Path(folder) / CARD_JSON).read_text())
