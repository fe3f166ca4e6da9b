"""Seeded random streams: every random draw of the package is a pure function of a seed and
indices, so that a resumed or re-batched run draws exactly what an uninterrupted one would."""

from __future__ import annotations

import torch


def step_generator(seed: int, *index: int) -> torch.Generator:
    """A CPU generator that depends only on (seed, index...): the same draws after a resume."""
    mixed = seed
    for i in index:
        mixed = (mixed * 1_000_003 + i + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def stream_index(seed: int, position: int, n: int, stream: int) -> int:
    """Element ``position`` of an endless sequence of seeded permutations of range(n).

    Every item appears once per pass of n; the order depends only on (seed, stream, pass).
    """
    lap, offset = divmod(position, n)
    perm = torch.randperm(n, generator=step_generator(seed, stream, lap))
    return int(perm[offset])
