"""Several GPUs on one job: guidance-parallel passes and context parallelism inside each group.

The passes of a denoising step (conditional, negative text, negative pose: up to three) are independent until they
are combined, so `G` groups of ranks each run a share of them and all-gather the velocities; inside a group the
`U` ranks split each pass's token sequence with diffusers' Ulysses attention (`enable_parallelism`, driven by the
transformer's `_cp_plan`). `parallel_layout` chooses (G, U) for a world of N ranks; `PipelineParallel` is what the
pipeline sees of the other ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

# The most passes a step has (conditional, negative text, negative pose).
MAX_PASSES = 3


class LayoutError(ValueError):
    """N ranks cannot be laid out for this model; the message names the numbers."""


class RankFailed(RuntimeError):
    """Another rank's share of the job failed (`PipelineParallel`): every rank of the job stops at the same point,
    the failed one with its own error, so none is left waiting for it."""

    def __init__(self, where: str, out_of_memory: bool):
        self.out_of_memory = out_of_memory
        super().__init__(f"{where} ran out of memory" if out_of_memory else f"{where} failed")


# What a rank's share of a job came to, as a number the ranks agree on (the largest wins).
DONE, FAILED, OUT_OF_MEMORY = 0, 1, 2


@dataclass(frozen=True)
class _SourceFailed:
    """What the source rank shares instead of a result that raised."""

    out_of_memory: bool


def failure_code(error: BaseException | None) -> int:
    if error is None:
        return DONE
    return OUT_OF_MEMORY if isinstance(error, torch.OutOfMemoryError) else FAILED


@dataclass(frozen=True)
class ParallelLayout:
    ranks: int
    guidance_groups: int  # G: the passes of a step split across G groups
    ulysses_degree: int  # U: ranks splitting each pass's sequence
    shards: int = 1  # ranks the transformer's blocks are sharded across (FSDP2): the ranks of one group

    def describe(self) -> str:
        if self.ranks == 1:
            return "1 rank"
        parts = [f"{self.guidance_groups} guidance groups"] if self.guidance_groups > 1 else []
        parts += [f"Ulysses {self.ulysses_degree}"] if self.ulysses_degree > 1 else []
        parts += [f"weights sharded {self.shards} ways"] if self.shards > 1 else []
        return f"{self.ranks} ranks ({' x '.join(parts)})"

    @property
    def speedup(self) -> float:
        """The best case over one rank for steps of `MAX_PASSES` passes (no communication)."""
        return self.speedup_for([MAX_PASSES])

    def speedup_for(self, passes_per_step: Sequence[int]) -> float:
        """The best case over one rank for a job of these steps (no communication): a group runs its share of a
        step's passes, ceil(p / G), each split U ways; a step of one pass gains from Ulysses only."""
        if not passes_per_step:
            return 1.0
        shares = sum(math.ceil(p / self.guidance_groups) for p in passes_per_step)
        return sum(passes_per_step) / shares * self.ulysses_degree


def parallel_layout(ranks: int, num_heads: int, guidance_groups: int | None = None, *,
                    sharded: bool = False) -> ParallelLayout:
    """The layout for `ranks`: as many guidance groups as divide it (3, else 2, else 1), Ulysses for the rest, which
    must divide the attention heads. `guidance_groups` forces G.

    sharded: the transformer does not fit one GPU, so its blocks are sharded across every rank (FSDP2). The ranks
        sharing weights must make the same calls in the same order, so they form one group (G = 1) splitting each
        pass's sequence with Ulysses, as the released code runs its FSDP with Ulysses.
    """
    if ranks < 1:
        raise LayoutError(f"ranks must be at least 1, got {ranks}.")
    if sharded:
        if guidance_groups not in (None, 1):
            raise LayoutError(f"Sharded weights need one guidance group, not {guidance_groups}: the ranks sharing "
                              "weights run the same passes.")
        guidance_groups = 1
    elif guidance_groups is None:
        guidance_groups = next(g for g in (3, 2, 1) if ranks % g == 0)
    if guidance_groups < 1 or guidance_groups > MAX_PASSES or ranks % guidance_groups:
        raise LayoutError(f"{ranks} ranks cannot form {guidance_groups} guidance groups (1 to {MAX_PASSES}, "
                          f"dividing the ranks).")
    ulysses = ranks // guidance_groups
    if num_heads % ulysses:
        raise LayoutError(f"{ranks} ranks in {guidance_groups} guidance groups leave Ulysses degree {ulysses}, which "
                          f"does not divide the {num_heads} attention heads; use a rank count whose share per group "
                          f"divides {num_heads}.")
    return ParallelLayout(ranks, guidance_groups, ulysses, ranks if sharded else 1)


def shard_transformer(transformer: torch.nn.Module, mesh) -> None:
    """Shards the transformer's blocks across the ranks of `mesh` with PyTorch FSDP2 (`fully_shard`), in place, as
    the released code shards them: each rank keeps 1/N of every block weight, and a block's weights are gathered when
    it runs and freed after (each block is its own FSDP root, so nothing is gathered ahead of time). The rest
    (embeddings, the pose branch, the head: under 2 % of the weights) goes whole to the mesh's device, so the pose
    branch runs through `encode_pose` as before. The transformer may come from CPU memory. Every rank of `mesh` must
    then make the same transformer calls in the same order."""
    from torch.distributed.fsdp import fully_shard

    device = torch.device("cpu")
    if mesh.device_type != "cpu":
        device = torch.device(mesh.device_type, torch.accelerator.current_device_index())
    blocks = transformer.blocks
    transformer.blocks = torch.nn.ModuleList()  # the rest goes to the device whole; each block, as shards
    try:
        transformer.to(device)
    finally:
        transformer.blocks = blocks
    for block in blocks:
        fully_shard(block, mesh=mesh)  # moves this rank's shard of the block to the mesh's device


def enable_ulysses(transformer: torch.nn.Module, mesh, degree: int) -> None:
    """diffusers' Ulysses attention over `mesh` (dimensions "ring" of size 1 and "ulysses" of `degree`), driven by the
    transformer's `_cp_plan`; any sequence length (`ulysses_anything`: every size and frame count the app offers)."""
    from diffusers import ContextParallelConfig

    config = ContextParallelConfig(ulysses_degree=degree, mesh=mesh, ulysses_anything=True)
    if torch.accelerator.device_count() > 0:
        transformer.enable_parallelism(config=config)
        return
    # diffusers places rank r on accelerator r % torch.accelerator.device_count(), a division by zero on a machine
    # with none; with a count of 1 its CPU path (gloo) runs as is.
    count = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        transformer.enable_parallelism(config=config)
    finally:
        torch.accelerator.device_count = count


class PipelineParallel:
    """The other ranks of a job, as the pipeline sees them (set as `pipe.parallel`).

    Guidance groups: this group runs passes `guidance_index`, `guidance_index + G`, ... of each step and all-gathers
    the velocities, so every group gets every pass, in order. Sharing: what every rank needs and one rank can compute
    (the prompts, the photo's and the poses' encodings, a window's conditions) is computed on the source rank only and
    broadcast over `share_group` (gloo: small CPU objects), so the other ranks never run the encoders."""

    def __init__(self, guidance_group=None, guidance_index: int = 0, guidance_size: int = 1, share_group=None,
                 source: bool = True):
        self.guidance_group, self.guidance_index, self.guidance_size = guidance_group, guidance_index, guidance_size
        self.share_group, self.source = share_group, source

    def run_passes(self, passes: int, like: torch.Tensor,
                   call: Callable[[list[int]], list[torch.Tensor]]) -> list[torch.Tensor]:
        """`call(pass indices)` returns their velocities, each shaped and typed like `like`. A group whose share
        raises says so before the gather, and every group raises then (that group its own error, the others
        `RankFailed`): a failure outside a collective never leaves a rank waiting. (Inside a pass, Ulysses'
        all-to-alls and FSDP's gathers wait for every rank of the group; a rank failing there is not covered.)"""
        if self.guidance_size == 1:
            return call(list(range(passes)))
        import torch.distributed as dist

        mine = list(range(self.guidance_index, passes, self.guidance_size)) if passes > 1 else [0]
        try:
            velocities = call(mine) if mine else []
        except Exception as error:  # agreed below, then raised
            velocities, failure = [], error
        else:
            failure = None
        codes = torch.zeros(self.guidance_size, dtype=torch.int32, device=like.device)
        codes[self.guidance_index] = failure_code(failure)
        dist.all_reduce(codes, group=self.guidance_group)
        if failure is not None:
            raise failure
        if codes.any():
            group = int(codes.nonzero()[0])
            raise RankFailed(f"guidance group {group} (its share of the step)", int(codes[group]) == OUT_OF_MEMORY)
        if passes == 1:  # every group ran the one pass
            return velocities
        share = math.ceil(passes / self.guidance_size)
        local = torch.zeros(share, *like.shape, dtype=like.dtype, device=like.device)  # groups with fewer send zeros
        for k, velocity in enumerate(velocities):
            local[k] = velocity
        gathered = [torch.empty_like(local) for _ in range(self.guidance_size)]
        dist.all_gather(gathered, local, group=self.guidance_group)
        return [gathered[p % self.guidance_size][p // self.guidance_size] for p in range(passes)]

    def once(self, compute: Callable[[], Any], device: torch.device | str) -> Any:
        """`compute()` on the source rank only; every rank gets its result, tensors on `device`. The result may nest
        tensors in tuples, lists, dicts and objects with a `map(fn)` method (`SteadyDancerConditions`). When it
        raises, the source raises its error and the other ranks `RankFailed`."""
        if self.share_group is None:
            return compute()
        import torch.distributed as dist

        source = dist.get_global_rank(self.share_group, 0)
        if not self.source:
            box = [None]
            dist.broadcast_object_list(box, src=source, group=self.share_group)
            if isinstance(box[0], _SourceFailed):
                raise RankFailed(f"rank {source} (encoding the inputs)", box[0].out_of_memory)
            return _map_tensors(box[0], lambda t: t.to(device))
        try:
            value = compute()
        except Exception as error:
            failed = _SourceFailed(failure_code(error) == OUT_OF_MEMORY)
            dist.broadcast_object_list([failed], src=source, group=self.share_group)
            raise
        dist.broadcast_object_list([_map_tensors(value, lambda t: t.cpu())], src=source, group=self.share_group)
        return value


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_map_tensors(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value.map(fn) if hasattr(value, "map") else value
