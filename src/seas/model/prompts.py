"""The Unbalanced Abnormal (UA) prompt: placeholder tokens, prompts, and token positions.

With the defaults (1 normal token, 4 tokens per type) and types sorted by name:
    type k  ->  "a ob1 with sks{4k+1} sks{4k+2} sks{4k+3} sks{4k+4}"
    normal  ->  "a ob1"
    mix of types i, j -> "a ob1 with <tokens of i> <tokens of j>"  (groups in the given order)
New rows of the embedding matrix start from the embedding of "object" (normal tokens) and
"defect" (anomaly tokens); when an initialiser word splits into several tokens (the tiny
byte-level tokenizer), the mean of their embeddings is used.
Token positions are read from the tokenised prompt, never assumed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from seas.errors import ConfigError

MIX = "+"  # separator of the types of a mixture in its label: "hole+scratch"


@dataclass
class PromptSpec:
    types: list[str]  # anomaly types in sorted order: type k owns token group k
    tokens_per_type: int = 4
    normal_tokens: int = 1
    normal_init: str = "object"
    anomaly_init: str = "defect"

    def __post_init__(self) -> None:
        if self.tokens_per_type < 1 or self.normal_tokens < 1:
            raise ConfigError("tokens per type and normal tokens must be at least 1 (defaults 4 and 1)")
        if len(set(self.types)) != len(self.types) or not self.types:
            raise ConfigError(f"anomaly types must be distinct and non-empty, got {self.types}")

    @property
    def normal_token_names(self) -> list[str]:
        return [f"ob{i + 1}" for i in range(self.normal_tokens)]

    def type_token_names(self, kind: str) -> list[str]:
        if kind not in self.types:
            raise ConfigError(f"unknown anomaly type {kind!r}; this model knows: {', '.join(self.types)}")
        k, n = self.types.index(kind), self.tokens_per_type
        return [f"sks{n * k + i + 1}" for i in range(n)]

    @property
    def all_token_names(self) -> list[str]:
        return self.normal_token_names + [t for kind in self.types for t in self.type_token_names(kind)]

    def normal_prompt(self) -> str:
        return "a " + " ".join(self.normal_token_names)

    def anomaly_prompt(self, kinds: str | list[str]) -> str:
        """Prompt of one type, or of several mixed (their token groups, in the given order)."""
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        tokens = [t for kind in kinds for t in self.type_token_names(kind)]
        return f"{self.normal_prompt()} with {' '.join(tokens)}"

    def type_to_tokens(self) -> dict[str, list[str]]:
        return {kind: self.type_token_names(kind) for kind in self.types}

    def to_dict(self) -> dict:
        return asdict(self)


def add_placeholder_tokens(tokenizer, text_encoder, spec: PromptSpec) -> list[int]:
    """Add the UA tokens to the tokenizer and the embedding matrix; return their ids.

    Raises if a token already exists (the model was already extended: load it instead).
    """
    names = spec.all_token_names
    added = tokenizer.add_tokens(names)
    if added != len(names):
        raise ConfigError("the tokenizer already holds SeaS tokens (ob1, sks1, ...); start from a base model")
    ids = tokenizer.convert_tokens_to_ids(names)
    text_encoder.resize_token_embeddings(len(tokenizer))
    table = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        normal_init = _word_embedding(tokenizer, table, spec.normal_init)
        anomaly_init = _word_embedding(tokenizer, table, spec.anomaly_init)
        for name, token_id in zip(names, ids):
            table[token_id] = normal_init if name.startswith("ob") else anomaly_init
    return ids


def _word_embedding(tokenizer, table: torch.Tensor, word: str) -> torch.Tensor:
    """Mean embedding of the tokens of ``word`` (one token for SD's vocabulary)."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    return table[ids].mean(dim=0)


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    """(N, max_length) input ids, padded to the tokenizer's model_max_length (77 for SD)."""
    return tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def token_positions(input_ids: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    """Position of each of ``token_ids`` in each row of (N, L) ``input_ids`` -> (N, len(token_ids)).

    Raises if a token is absent or repeated (a truncated or malformed prompt).
    """
    positions = []
    for row in input_ids:
        found = []
        for token_id in token_ids:
            where = (row == token_id).nonzero().flatten()
            if len(where) != 1:
                raise ConfigError(f"token id {token_id} appears {len(where)} times in a prompt; expected once")
            found.append(int(where[0]))
        positions.append(found)
    return torch.tensor(positions, dtype=torch.long)


@dataclass
class PromptTables:
    """Token ids and loss columns of every prompt, computed once from the tokenised prompts."""

    anomaly_ids: torch.Tensor  # (K, L) input ids of each type's prompt
    normal_ids: torch.Tensor  # (L,) input ids of the normal prompt
    columns: torch.Tensor  # (K, M + N) positions of the M normal then N anomaly tokens
    n_normal: int  # M

    @classmethod
    def build(cls, tokenizer, spec: PromptSpec) -> "PromptTables":
        anomaly_ids = tokenize(tokenizer, [spec.anomaly_prompt(kind) for kind in spec.types])
        normal_names = spec.normal_token_names
        columns = torch.stack([
            token_positions(
                anomaly_ids[k : k + 1],
                tokenizer.convert_tokens_to_ids(normal_names + spec.type_token_names(kind)),
            )[0]
            for k, kind in enumerate(spec.types)
        ])
        normal_ids = tokenize(tokenizer, [spec.normal_prompt()])[0]
        return cls(anomaly_ids, normal_ids, columns, len(normal_names))
