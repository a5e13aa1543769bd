"""Several GPUs on one job: guidance-parallel passes and context parallelism inside each group.

The passes of a denoising step (conditional, negative text, negative pose: up to three) are independent until they
are combined, so `G` groups of ranks each run a share of them and all-gather the velocities; inside a group the
`U` ranks split each pass's token sequence with diffusers' Ulysses attention (`enable_parallelism`, driven by the
transformer's `_cp_plan`). `parallel_layout` chooses (G, U) for a world of N ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

# The most passes a step has (conditional, negative text, negative pose).
MAX_PASSES = 3


class LayoutError(ValueError):
    """N ranks cannot be laid out for this model; the message names the numbers."""


@dataclass(frozen=True)
class ParallelLayout:
    ranks: int
    guidance_groups: int  # G: the passes of a step split across G groups
    ulysses_degree: int  # U: ranks splitting each pass's sequence

    def describe(self) -> str:
        if self.ranks == 1:
            return "1 rank"
        parts = [f"{self.guidance_groups} guidance groups"] if self.guidance_groups > 1 else []
        parts += [f"Ulysses {self.ulysses_degree}"] if self.ulysses_degree > 1 else []
        return f"{self.ranks} ranks ({' x '.join(parts)})"

    @property
    def speedup(self) -> float:
        """The best case over one rank for a step of `MAX_PASSES` passes (for estimates; no communication)."""
        return MAX_PASSES / math.ceil(MAX_PASSES / self.guidance_groups) * self.ulysses_degree


def parallel_layout(ranks: int, num_heads: int, guidance_groups: int | None = None) -> ParallelLayout:
    """The layout for `ranks`: as many guidance groups as divide it (3, else 2, else 1), Ulysses for the rest, which
    must divide the attention heads. `guidance_groups` forces G."""
    if ranks < 1:
        raise LayoutError(f"ranks must be at least 1, got {ranks}.")
    if guidance_groups is None:
        guidance_groups = next(g for g in (3, 2, 1) if ranks % g == 0)
    if guidance_groups < 1 or guidance_groups > MAX_PASSES or ranks % guidance_groups:
        raise LayoutError(f"{ranks} ranks cannot form {guidance_groups} guidance groups (1 to {MAX_PASSES}, "
                          f"dividing the ranks).")
    ulysses = ranks // guidance_groups
    if num_heads % ulysses:
        raise LayoutError(f"{ranks} ranks in {guidance_groups} guidance groups leave Ulysses degree {ulysses}, which "
                          f"does not divide the {num_heads} attention heads; use a rank count whose share per group "
                          f"divides {num_heads}.")
    return ParallelLayout(ranks, guidance_groups, ulysses)


class GuidanceParallel:
    """Runs a step's passes split across the guidance groups: this group runs passes `index`, `index + G`, ... and
    all-gathers the velocities (every group gets every pass, in order)."""

    def __init__(self, group, index: int, size: int):
        self.group, self.index, self.size = group, index, size

    def run(self, passes: int, like: torch.Tensor, call: Callable[[list[int]], list[torch.Tensor]]) -> list[torch.Tensor]:
        """`call(pass indices)` returns their velocities, each shaped and typed like `like`."""
        import torch.distributed as dist

        mine = list(range(self.index, passes, self.size))
        share = math.ceil(passes / self.size)
        local = torch.zeros(share, *like.shape, dtype=like.dtype, device=like.device)  # groups with fewer send zeros
        for k, velocity in enumerate(call(mine) if mine else []):
            local[k] = velocity
        gathered = [torch.empty_like(local) for _ in range(self.size)]
        dist.all_gather(gathered, local, group=self.group)
        return [gathered[p % self.size][p // self.size] for p in range(passes)]
