"""LoRA adapters for stage 1 (``--adapter lora``): what trains, what a run stores, how it merges.

Full fine-tuning (the paper, the default) trains every U-Net weight and the whole token-embedding
matrix, and a run stores both whole (3.4 GB for SD 1.x in fp32). With ``--adapter lora`` the U-Net
stays frozen and low-rank adapters on its attention projections train instead (``peft``: W x +
(alpha / r) B A x, A (r, in), B (out, r), B starting at zero so that a fresh adapter changes
nothing); in the text encoder only the UA tokens' embedding rows train (:class:`TokenRows`), as
those rows do in full fine-tuning. The run then stores two small tensors files: the adapter's
weights and the token rows (:data:`ADAPTER_FILE`). Attention capture (L_DA) and the mask head's
features see the adapted projections unchanged: peft wraps ``to_q`` / ``to_k`` and the capture's
hooks sit on the wrappers.

``peft`` is an optional extra (``pip install peft``); :func:`require_peft` says so in one line.
"""

from __future__ import annotations

import importlib.util

import torch

from seas.errors import ConfigError

ADAPTER_DIR = "adapter"
ADAPTER_FILE = "adapter.safetensors"  # in ADAPTER_DIR: "unet.<peft key>" tensors, "token_ids", "token_rows"


def has_peft() -> bool:
    return importlib.util.find_spec("peft") is not None


def require_peft() -> None:
    if not has_peft():
        raise ConfigError("--adapter lora needs the peft package: pip install peft (or pip install 'seas[lora]')")


def lora_config(rank: int, alpha: float | None, targets: list[str]):
    """peft's LoraConfig: rank ``rank``, scale ``alpha / rank`` (alpha defaults to the rank: scale 1),
    on the U-Net modules whose names end with one of ``targets``; A Kaiming-uniform, B zero."""
    require_peft()
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, target_modules=list(targets),
                      init_lora_weights=True)


def add_lora(unet, rank: int, alpha: float | None, targets: list[str], seed: int = 0) -> None:
    """Wrap ``unet``'s target projections with a fresh LoRA adapter (its A drawn from ``seed``, so
    that a run is reproducible); only its weights train."""
    config = lora_config(rank, alpha, targets)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet.add_adapter(config)
    except ValueError as err:  # no module matches a target
        raise ConfigError(f"--lora-targets {' '.join(targets)}: {str(err).splitlines()[0]}; the U-Net's attention "
                          f"projections are named to_q, to_k, to_v and to_out.0") from None
    unet.requires_grad_(False)
    for name, parameter in unet.named_parameters():
        parameter.requires_grad_("lora_" in name)


def lora_parameters(unet) -> list[torch.nn.Parameter]:
    return [p for name, p in unet.named_parameters() if "lora_" in name]


def merge_lora(unet) -> None:
    """Fold the adapter into the weights (W + scale B A) and remove the wrappers: a plain U-Net."""
    unet.fuse_lora()
    unet.unload_lora()


class TokenRows(torch.nn.Module):
    """The token-embedding lookup with only the rows of ``ids`` trainable.

    ``frozen`` (V, D) is the embedding matrix as it was (a buffer, no gradient); ``rows`` (n, D)
    the trained rows of tokens ``ids``. The lookup takes a token's row from ``rows`` when it is
    one of ``ids`` and from ``frozen`` otherwise, so gradients reach exactly those rows and the
    optimizer keeps state for n rows, not V (for SD 1.x, 9 rows instead of 49,417).
    """

    def __init__(self, embedding: torch.nn.Embedding, ids: list[int]):
        super().__init__()
        weight = embedding.weight.detach()
        self.register_buffer("frozen", weight.clone())
        self.rows = torch.nn.Parameter(weight[ids].clone().float())
        position = torch.full((len(weight),), -1, dtype=torch.long)
        position[torch.tensor(ids)] = torch.arange(len(ids))
        self.register_buffer("position", position)  # (V,) token id -> index in rows, -1 elsewhere
        self.register_buffer("ids", torch.tensor(ids, dtype=torch.long))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        base = torch.nn.functional.embedding(input_ids, self.frozen)  # (B, L, D)
        where = self.position[input_ids]  # (B, L)
        trained = self.rows[where.clamp(min=0)].to(base.dtype)  # (B, L, D)
        return torch.where((where >= 0)[..., None], trained, base)


def train_token_rows(text_encoder, ids: list[int]) -> TokenRows:
    """Freeze ``text_encoder`` and replace its token lookup by :class:`TokenRows` over ``ids``."""
    text_encoder.requires_grad_(False)
    rows = TokenRows(text_encoder.get_input_embeddings(), ids)
    text_encoder.set_input_embeddings(rows)
    return rows


def adapter_tensors(unet, rows: TokenRows, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """What a LoRA run stores (:data:`ADAPTER_FILE`), the floats in ``dtype``."""
    from peft.utils import get_peft_model_state_dict

    tensors = {f"unet.{key}": value.detach().to("cpu", dtype).contiguous()
               for key, value in get_peft_model_state_dict(unet).items()}
    tensors["token_ids"] = rows.ids.cpu()
    tensors["token_rows"] = rows.rows.detach().to("cpu", dtype).contiguous()
    return tensors


def apply_adapter(unet, text_encoder, tensors: dict[str, torch.Tensor], rank: int, alpha: float | None,
                  targets: list[str], merge: bool = True) -> None:
    """Put a stored adapter on a base: LoRA on ``unet`` (folded into its weights with ``merge``),
    the token rows into ``text_encoder``'s embedding matrix (already resized to the run's tokenizer)."""
    from peft.utils import set_peft_model_state_dict

    add_lora(unet, rank, alpha, targets)
    lora = {key.removeprefix("unet."): value for key, value in tensors.items() if key.startswith("unet.")}
    result = set_peft_model_state_dict(unet, lora)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise ConfigError(f"the stored adapter does not fit this U-Net (unexpected weights such as {unexpected[0]})")
    unet.requires_grad_(False)
    if merge:
        merge_lora(unet)
    table = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        table[tensors["token_ids"].long()] = tensors["token_rows"].to(table.dtype)
