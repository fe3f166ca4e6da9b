"""``seas pretrain``: the tiny base shipped with the package, trained on the procedural corpus.

SeaS works because Stable Diffusion arrives knowing what surfaces and defects look like. This
trains our offline stand-in the way SD was trained, on :mod:`seas.data.corpus` (captioned
photographs of many products and generic defects, never the demo's product), in two phases:

1. ``vae``: the autoencoder, on corpus images: L1 + MSE reconstruction with the L1 weighted
   ``1 + defect_weight`` inside each image's defect mask (a defect is a few percent of the
   pixels, and the whole point of the base is that it keeps them), plus a small KL term and,
   with ``vae_perceptual`` > 0, that weight times the LPIPS-VGG distance between each image and
   its reconstruction (SD's VAE loss has such a term; the frozen network is handed in). Then
   ``scaling_factor`` is set so that the latents have unit variance, as SD's 0.18215 does;
2. ``unet``: U-Net and text encoder together (epsilon MSE on the SD noise schedule, the error in
   the latent cells a defect touches weighted ``1 + unet_defect_weight``), captions dropped to
   the empty prompt at rate ``empty_captions`` (classifier-free guidance needs the unconditional
   branch), with an exponential moving average of the weights that is what gets exported.

``init`` continues from an earlier pretraining's model instead of random weights (with
``vae_steps`` 0 its VAE and scaling factor are kept, with ``unet_steps`` 0 its U-Net and text
encoder); the card then names it and the commands that made it. ``vae_train`` ``decoder``
fine-tunes only the VAE's decoder (and ``post_quant_conv``): the encoder, so every latent the
U-Net learned from and the scaling factor, stays as it was, while the pictures decoded from
those latents sharpen (SD's ft-MSE decoder was made the same way).

Everything is deterministic: corpus sample ``i`` is a pure function of ``(corpus_seed, i)``;
update ``n`` of a phase draws its samples, augmentations, noise and timesteps from
``(seed, phase, n)``. A checkpoint holds the weights, the optimizer, the moving average and the
curves, so a resumed run ends with the weights an uninterrupted one would have
(``checkpoints/<phase>-NNNNNN.pt``, written atomically, the last two kept).

The output folder::

    pretrain.json        the config and what is finished
    curves.jsonl         one line per logged update: phase, update, losses, seconds
    checkpoints/         resumable state
    snapshots/unet-NNNNNN/  diffusers folders of the moving average at ``snapshots`` updates
    model/               the result: a diffusers folder in fp16 safetensors, MODEL_CARD.md, card.json
"""

from __future__ import annotations

import copy
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seas.data import corpus
from seas.errors import ConfigError, RunError
from seas.files.atomic import read_json, remove_path, write_file, write_json
from seas.judge.vae_probe import VaeProbe
from seas.model.backbone import COMPONENTS, build_tiny_components, load_backbone, quiet_log_variance, save_components
from seas.model.prompts import tokenize
from seas.seeds import step_generator
from seas.training.configs import PretrainConfig
from seas.training.loop import progress
from seas.training.model_card import build_card, init_record, write_card

PHASES = ("vae", "unet")
CURVE_ORDER = ("vae", "vae_probe", "unet")  # the phases of curves.jsonl lines, in training order
STATE = "pretrain.json"
CURVES = "curves.jsonl"
CHECKPOINTS = "checkpoints"
SNAPSHOTS = "snapshots"
MODEL = "model"
KEEP_CHECKPOINTS = 2


# ----------------------------------------------------------------------------- the corpus in memory


class CorpusPool:
    """Corpus samples ``0 .. size - 1``, each rendered on first use and then kept (uint8 images
    and masks, latents once a VAE is set): the same sample whatever the order of the draws."""

    def __init__(self, cfg: PretrainConfig):
        self.cfg = cfg
        n, r = cfg.corpus_size, cfg.resolution
        self.images = np.zeros((n, r, r, 3), np.uint8)  # pages are touched only when rendered
        self.masks = np.zeros((n, r, r), bool)
        self.captions: list[str | None] = [None] * n
        self.latents: torch.Tensor | None = None  # (n, c, h, w) scaled latent means, once encoded
        self.encoded = np.zeros(n, bool)

    def _render(self, indices: np.ndarray) -> None:
        for i in indices:
            if self.captions[i] is None:
                sample = corpus.render_sample(self.cfg.corpus_seed, int(i), self.cfg.resolution, self.cfg.defect_share)
                self.images[i], self.masks[i], self.captions[i] = sample.image, sample.mask, sample.caption

    def pixels(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(B, 3, R, R)`` in [-1, 1] and defect masks ``(B, 1, R, R)`` in {0, 1}."""
        self._render(indices)
        images = torch.from_numpy(self.images[indices]).permute(0, 3, 1, 2).float() / 127.5 - 1
        return images, torch.from_numpy(self.masks[indices])[:, None].float()

    def caption_list(self, indices: np.ndarray) -> list[str]:
        self._render(indices)
        return [self.captions[i] for i in indices]

    def latent_masks(self, indices: np.ndarray, factor: int) -> torch.Tensor:
        """Defect masks at the latent's size ``(B, 1, R / factor, R / factor)``: a cell is 1 when
        any of its pixels is (a one-pixel scratch still marks its cells)."""
        self._render(indices)
        masks = torch.from_numpy(self.masks[indices])[:, None].float()
        return F.max_pool2d(masks, factor)

    def latent_batch(self, vae, indices: np.ndarray, autocast) -> torch.Tensor:
        """Scaled latent means ``(B, c, h, w)`` of the samples, encoded on first use."""
        todo = np.unique(indices[~self.encoded[indices]])
        if len(todo):
            images, _ = self.pixels(todo)
            with torch.no_grad(), autocast():
                means = vae.encode(images).latent_dist.mean.float()
            if self.latents is None:
                self.latents = torch.zeros((self.cfg.corpus_size, *means.shape[1:]))
            self.latents[todo] = means * vae.config.scaling_factor
            self.encoded[todo] = True
        return self.latents[indices]


def draw(cfg: PretrainConfig, phase: str, step: int, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Update ``step`` of ``phase``: corpus indices ``(B,)``, quarter turns ``(B,)`` and flips ``(B,)``."""
    rng = np.random.default_rng([cfg.seed, PHASES.index(phase), step])
    return rng.integers(cfg.corpus_size, size=batch), rng.integers(4, size=batch), rng.random(batch) < 0.5


def augment(x: torch.Tensor, turns: np.ndarray, flips: np.ndarray) -> torch.Tensor:
    """Each ``(C, H, W)`` item of ``x`` rotated by its quarter turns, then mirrored where flipped."""
    out = [torch.rot90(item, int(k), dims=(1, 2)) for item, k in zip(x, turns)]
    return torch.stack([item.flip(2) if f else item for item, f in zip(out, flips)])


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_paths(out: Path, phase: str) -> list[Path]:
    folder = out / CHECKPOINTS
    return sorted(folder.glob(f"{phase}-*.pt")) if folder.is_dir() else []


def save_checkpoint(out: Path, phase: str, step: int, state: dict) -> None:
    path = out / CHECKPOINTS / f"{phase}-{step:06d}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, lambda tmp: torch.save(state, tmp))
    for old in checkpoint_paths(out, phase)[:-KEEP_CHECKPOINTS]:
        remove_path(old)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a damaged file, whatever the error
        raise RunError(f"{path}: damaged checkpoint ({type(err).__name__}); delete it to resume from the one "
                       "before") from None


def lr_at(base: float, step: int, steps: int, warmup: int, schedule: str) -> float:
    """The learning rate of update ``step`` of ``steps``: a linear warm-up over ``warmup`` updates,
    then constant or a cosine down to a tenth of ``base`` at the last update."""
    if step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant" or steps <= warmup + 1:
        return base
    progress = (step - warmup) / (steps - warmup - 1)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


# ----------------------------------------------------------------------------- the two phases


class Pretraining:
    """One pretraining run in ``out``: its parts, its state, and the two phases."""

    def __init__(self, cfg: PretrainConfig, out: Path, perceptual: torch.nn.Module | None = None):
        self.cfg, self.out = cfg, out
        self.perceptual = perceptual.eval().requires_grad_(False) if perceptual is not None else None
        torch.manual_seed(cfg.seed)
        self.parts = build_tiny_components(
            seed=cfg.seed, width=cfg.width, vae_width=cfg.vae_width, latent_channels=cfg.latent_channels,
            vae_factor=cfg.vae_factor, top_attention=cfg.top_attention, words=corpus.caption_words(),
            norm_groups=cfg.norm_groups, vae_norm_groups=cfg.vae_norm_groups)
        if cfg.init is not None:
            self.parts = initial_parts(cfg, self.parts)
        self.pool = CorpusPool(cfg)
        self.dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
        self.probe: VaeProbe | None = None

    def autocast(self):
        return torch.autocast("cpu", dtype=self.dtype, enabled=self.dtype != torch.float32)

    def log(self, phase: str, step: int, losses: dict, started: float, elapsed: float) -> None:
        line = {"phase": phase, "update": step, **{k: round(v, 6) for k, v in losses.items()},
                "seconds": round(elapsed + time.perf_counter() - started, 1)}
        with open(self.out / CURVES, "a") as f:
            f.write(json.dumps(line) + "\n")

    def vae_loss(self, step: int) -> dict:
        vae, cfg = self.parts["vae"], self.cfg
        indices, turns, flips = draw(cfg, "vae", step, cfg.vae_batch)
        images, masks = self.pool.pixels(indices)
        x, m = augment(images, turns, flips), augment(masks, turns, flips)  # (B, 3, R, R), (B, 1, R, R)
        decoder_only = cfg.vae_train == "decoder"
        with self.autocast():
            with torch.set_grad_enabled(not decoder_only):  # a frozen encoder needs no graph
                posterior = vae.encode(x).latent_dist
            noise = torch.randn(posterior.mean.shape, generator=step_generator(cfg.seed, 11, step))
            recon = vae.decode(posterior.mean + posterior.std * noise).sample.float()
        error = (recon - x).abs()
        l1 = (error * (1 + cfg.defect_weight * m)).mean()
        kl = posterior.kl().float().mean()
        total = l1 + F.mse_loss(recon, x) + (0.0 if decoder_only else cfg.kl_weight * kl)
        defect_l1 = (error * m).sum() / (3 * m.sum()).clamp(min=1)
        losses = {"l1": error.mean().detach(), "defect_l1": defect_l1.detach(), "kl": kl.detach()}
        if cfg.vae_perceptual:  # LPIPS of each image against its reconstruction, both in [-1, 1]: (B,)
            with self.autocast():
                perceptual = self.perceptual(recon.clamp(-1, 1), x).float().mean()
            total = total + cfg.vae_perceptual * perceptual
            losses["lpips"] = perceptual.detach()
        return {"total": total, **losses}

    def unet_loss(self, step: int) -> dict:
        cfg, p = self.cfg, self.parts
        indices, turns, flips = draw(cfg, "unet", step, cfg.unet_batch)
        z = augment(self.pool.latent_batch(p["vae"], indices, self.autocast), turns, flips)  # (B, c, h, w)
        g = step_generator(cfg.seed, 12, step)
        noise = torch.randn(z.shape, generator=g)
        t = torch.randint(0, p["scheduler"].config.num_train_timesteps, (len(z),), generator=g)
        dropped = (torch.rand(len(z), generator=g) < cfg.empty_captions).tolist()
        captions = ["" if d else c for c, d in zip(self.pool.caption_list(indices), dropped)]
        with self.autocast():
            context = p["text_encoder"](tokenize(p["tokenizer"], captions))[0]  # (B, 77, D)
            pred = p["unet"](p["scheduler"].add_noise(z, noise, t), t, context).sample.float()
        squared = (pred - noise) ** 2  # (B, c, h, w)
        loss = squared.mean()
        if cfg.unet_defect_weight == 0:
            return {"total": loss, "mse": loss.detach()}
        m = augment(self.pool.latent_masks(indices, cfg.vae_factor), turns, flips)  # (B, 1, h, w) in {0, 1}
        total = (squared * (1 + cfg.unet_defect_weight * m)).mean()
        defect = (squared * m).sum() / (squared.shape[1] * m.sum()).clamp(min=1)
        return {"total": total, "mse": loss.detach(), "defect_mse": defect.detach()}

    def run_phase(self, phase: str, modules: list, groups: list[dict], steps: int, step_loss, ema=None,
                  after_update=None) -> None:
        """``steps`` updates of ``modules`` (optimizer ``groups``), resumed from the phase's last
        checkpoint; the moving average ``ema`` (parameter copies, or ``None``) follows them;
        ``after_update(n)`` (optional) runs after update ``n`` with the modules in eval mode."""
        cfg = self.cfg
        optimizer = torch.optim.AdamW(groups, weight_decay=0.01 if phase == "unet" else 0.0)
        start, elapsed = 0, 0.0
        if checkpoint_paths(self.out, phase):
            state = load_checkpoint(checkpoint_paths(self.out, phase)[-1])
            for module, weights in zip(modules, state["modules"]):
                module.load_state_dict(weights)
            optimizer.load_state_dict(state["optimizer"])
            if ema is not None:
                for mine, saved in zip(ema, state["ema"]):
                    mine.copy_(saved)
            start, elapsed = state["step"], state["seconds"]
            print(f"pretrain {phase}: resumed at update {start}", flush=True)
        bases = [g["lr"] for g in groups]
        params = [q for g in groups for q in g["params"]]
        for module in modules:
            module.train()
        started = time.perf_counter()
        with progress(steps, start, f"pretrain: {phase}", disable=False) as bar:
            for step in range(start, steps):
                for group, base in zip(optimizer.param_groups, bases):
                    group["lr"] = lr_at(base, step, steps, cfg.warmup, cfg.schedule)
                losses = step_loss(step)
                losses["total"].backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    decay = min(cfg.ema_decay, (1 + step) / (10 + step))
                    with torch.no_grad():
                        torch._foreach_lerp_(ema, params, 1 - decay)
                values = {k: float(v.detach()) for k, v in losses.items()}
                bar.update(1)
                bar.set_postfix({k: f"{v:.4f}" for k, v in values.items() if k != "total"})
                done = step + 1
                if done % cfg.log_every == 0 or done == steps:
                    self.log(phase, done, values, started, elapsed)
                if done % cfg.checkpoint_every == 0 or done == steps:
                    save_checkpoint(self.out, phase, done, {
                        "step": done, "seconds": elapsed + time.perf_counter() - started,
                        "modules": [m.state_dict() for m in modules], "optimizer": optimizer.state_dict(),
                        "ema": list(ema) if ema is not None else []})
                if after_update is not None:
                    for module in modules:
                        module.eval()
                    after_update(done)
                    for module in modules:
                        module.train()
                if phase == "unet" and done in cfg.snapshots:
                    self.export(self.out / SNAPSHOTS / f"unet-{done:06d}", torch.float32)
        for module in modules:
            module.eval()

    def train_vae(self) -> None:
        if self.cfg.vae_steps == 0:  # the VAE of --init, kept
            return
        vae = self.parts["vae"]
        if self.cfg.vae_train == "decoder":  # the encoder side of --init's VAE is kept as it is
            vae.encoder.requires_grad_(False)
            vae.quant_conv.requires_grad_(False)
            trained = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
        else:
            if self.cfg.init is None:
                quiet_log_variance(vae)
            trained = list(vae.parameters())
        self.run_phase("vae", [vae], [{"params": trained, "lr": self.cfg.lr_vae}],
                       self.cfg.vae_steps, self.vae_loss, after_update=self.probe_vae)

    def probe_vae(self, update: int) -> None:
        """Log what the VAE keeps of the demo product's defects every ``probe_every`` updates and
        at the last one (the classifier is fitted on first use)."""
        if not self.cfg.probe or (update % self.cfg.probe_every and update != self.cfg.vae_steps):
            return
        if self.probe is None:
            self.probe = VaeProbe(size=self.cfg.resolution)
        reading = self.probe.measure(self.parts["vae"])
        with open(self.out / CURVES, "a") as f:
            f.write(json.dumps({"phase": "vae_probe", "update": update, **reading}) + "\n")
        print(f"VAE at {update} updates: type fidelity {reading['type_fidelity']:.2f}, PSNR {reading['psnr']:.1f} dB",
              flush=True)

    def set_scaling_factor(self) -> None:
        """SD's rule: ``scaling_factor`` = 1 / std of the latents (over 512 corpus samples); a
        VAE kept from ``init``, or one whose encoder is (``vae_train`` decoder), keeps its own."""
        if self.cfg.vae_steps == 0 or self.cfg.vae_train == "decoder":
            return
        vae = self.parts["vae"]
        vae.register_to_config(scaling_factor=1.0)
        indices = np.arange(min(512, self.cfg.corpus_size))
        images, _ = self.pool.pixels(indices)
        with torch.no_grad(), self.autocast():
            means = torch.cat([vae.encode(chunk).latent_dist.mean.float() for chunk in images.split(64)])
        vae.register_to_config(scaling_factor=float(1.0 / means.std()))

    def train_unet(self) -> None:
        p, cfg = self.parts, self.cfg
        p["vae"].requires_grad_(False)
        groups = [{"params": list(p["unet"].parameters()), "lr": cfg.lr_unet},
                  {"params": list(p["text_encoder"].parameters()), "lr": cfg.lr_text}]
        self.ema = [q.detach().clone() for g in groups for q in g["params"]]
        self.run_phase("unet", [p["unet"], p["text_encoder"]], groups, cfg.unet_steps, self.unet_loss, self.ema)

    def export(self, folder: Path, dtype: torch.dtype) -> Path:
        """A copy of the parts with the moving average in place of the trained U-Net and text
        encoder weights, written as a diffusers folder in ``dtype`` (replacing ``folder``)."""
        parts = dict(self.parts)
        for name in ("unet", "text_encoder", "vae"):
            parts[name] = copy.deepcopy(self.parts[name])
        with torch.no_grad():
            for q, e in zip([*parts["unet"].parameters(), *parts["text_encoder"].parameters()], self.ema):
                q.copy_(e)
        for name in ("unet", "text_encoder", "vae"):
            parts[name].to(dtype)
        remove_path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        return save_components(parts, folder)


def initial_parts(cfg: PretrainConfig, built: dict) -> dict:
    """The parts of ``cfg.init`` in fp32, checked against the architecture ``built`` from the
    options (the card describes the model by them, and a changed one would not be continued)."""
    backbone = load_backbone(cfg.init)
    parts = {name: getattr(backbone, name) for name in COMPONENTS}
    for name in ("unet", "vae", "text_encoder"):
        parts[name] = parts[name].float()
        mine = {k: tuple(v.shape) for k, v in built[name].state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in parts[name].state_dict().items()}
        if mine != theirs:
            raise ConfigError(f"--init {cfg.init}: its {name} is not the one the architecture options build (--width, "
                              "--vae-width, --latent-channels, --vae-factor, --top-attention); give the options it "
                              "was pretrained with")
    if parts["tokenizer"].get_vocab() != built["tokenizer"].get_vocab():
        raise ConfigError(f"--init {cfg.init}: its tokenizer is not the corpus's; continue only a base written by "
                          "seas pretrain")
    return parts


def write_state(out: Path, cfg: PretrainConfig, **status) -> None:
    write_json(out / STATE, {"format": "seas-pretrain-1", "config": cfg.to_dict(), **status})


def check_out(out: Path, cfg: PretrainConfig) -> None:
    """A new or empty ``out``, or an unfinished pretraining with the same config (resumed)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder; choose a new folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (out / STATE).is_file():
        raise ConfigError(f"--out {out}: not empty and not a pretraining folder; choose a new folder")
    state = read_json(out / STATE)
    if state.get("config") != cfg.to_dict():
        changed = sorted(k for k in set(state.get("config", {})) | set(cfg.to_dict())
                         if state.get("config", {}).get(k) != cfg.to_dict().get(k))
        raise ConfigError(f"--out {out}: a pretraining with other settings ({', '.join(changed)}); repeat them to "
                          "resume, or choose a new folder")


def pretrain(cfg: PretrainConfig, out: str | Path, command: str = "", name: str = "seas-tiny",
             perceptual: torch.nn.Module | None = None) -> Path:
    """Run (or resume) the pretraining into ``out``; return the exported model folder, which
    holds the model card. ``perceptual``: the LPIPS network that ``vae_perceptual`` weights
    (``seas.evaluation.lpips_weights.load_lpips_weights()``), needed only then."""
    out = Path(out)
    if cfg.vae_perceptual and cfg.vae_steps and perceptual is None:
        raise ConfigError("--vae-perceptual needs the LPIPS network: pass perceptual= (seas pretrain loads it "
                          "after `seas weights fetch lpips`), or give --vae-perceptual 0")
    check_out(out, cfg)
    # loads --init first: a base that cannot be continued leaves nothing behind
    run = Pretraining(cfg, out, perceptual)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / STATE).is_file():
        write_state(out, cfg, finished=[], command=command)
    run.train_vae()
    run.set_scaling_factor()
    write_state(out, cfg, finished=["vae"], command=command)
    run.train_unet()
    model = run.export(out / MODEL, torch.float16)
    probe = {}
    if cfg.probe:
        if run.probe is None:  # resumed after the VAE phase: read the finished VAE once more
            run.probe_vae(cfg.vae_steps)
        last = [r for r in curves(out) if r["phase"] == "vae_probe"][-1]
        probe = {"originals": run.probe.originals(), "vae": {k: v for k, v in last.items() if k != "phase"}}
    rows = curves(out)
    card = build_card(name=name, cfg=cfg.to_dict(), parts=run.parts, folder=model, rows=rows, probe=probe,
                      machine=machine(), command=command or "seas pretrain", date=time.strftime("%Y-%m-%d"),
                      init=init_record(cfg.init) if cfg.init is not None else None)
    write_card(model, card)
    write_state(out, cfg, finished=list(PHASES), command=command)
    return model


def curves(out: Path) -> list[dict]:
    """The lines of ``curves.jsonl``, in order (the last line of an update logged twice wins)."""
    rows: dict[tuple, dict] = {}
    path = Path(out) / CURVES
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[(row["phase"], row["update"])] = row
    return sorted(rows.values(), key=lambda r: (CURVE_ORDER.index(r["phase"]), r["update"]))


def machine() -> str:
    threads = torch.get_num_threads()
    return (f"{platform.processor() or platform.machine()}, {threads} thread{'s' if threads != 1 else ''}, "
            f"torch {torch.__version__}")

