"""Several ranks on one job (`steadydancer.parallel`): the layout rule, and guidance-parallel passes in real gloo
process groups giving every rank every pass, in order."""

import multiprocessing
import os
import socket

import pytest
import torch

from steadydancer.parallel import GuidanceParallel, LayoutError, ParallelLayout, parallel_layout


@pytest.mark.parametrize("ranks, groups, ulysses", [(1, 1, 1), (2, 2, 1), (3, 3, 1), (4, 2, 2), (5, 1, 5),
                                                     (6, 3, 2), (8, 2, 4)])
def test_the_layout_splits_passes_first_then_the_sequence(ranks, groups, ulysses):
    assert parallel_layout(ranks, num_heads=40) == ParallelLayout(ranks, groups, ulysses)


def test_a_layout_that_cannot_divide_the_heads_or_the_passes_is_refused_naming_the_numbers():
    with pytest.raises(LayoutError, match="7 ranks .* Ulysses degree 7, which does not divide the 40 attention heads"):
        parallel_layout(7, num_heads=40)
    with pytest.raises(LayoutError, match="4 ranks cannot form 3 guidance groups"):
        parallel_layout(4, num_heads=40, guidance_groups=3)
    assert parallel_layout(8, num_heads=40).describe() == "8 ranks (2 guidance groups x Ulysses 4)"
    assert parallel_layout(1, num_heads=40).describe() == "1 rank"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _guidance_worker(rank, world, port, passes, queue):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        like = torch.zeros(2, 3)
        ran = []

        def call(indices):  # pass p's "velocity" is full of p + 1; each rank records what it computed
            ran.extend(indices)
            return [torch.full_like(like, p + 1.0) for p in indices]

        got = GuidanceParallel(dist.group.WORLD, rank, world).run(passes, like, call)
        queue.put((rank, ran, [float(v[0, 0]) for v in got]))
    except Exception as error:  # report, don't hang the parent
        queue.put((rank, None, repr(error)))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs torch.distributed with gloo")
@pytest.mark.parametrize("world, passes", [(2, 3), (3, 3), (3, 2), (2, 1)])
def test_every_rank_gets_every_pass_once_computed(world, passes):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    workers = [ctx.Process(target=_guidance_worker, args=(r, world, port, passes, queue)) for r in range(world)]
    for w in workers:
        w.start()
    results = sorted(queue.get(timeout=120) for _ in workers)
    for w in workers:
        w.join(30)
    computed = []
    for rank, ran, got in results:
        assert ran is not None, got
        assert got == [p + 1.0 for p in range(passes)]  # every pass, in order, on every rank
        assert ran == list(range(rank, passes, world))  # this rank's share only
        computed += ran
    assert sorted(computed) == list(range(passes))  # each pass computed exactly once
