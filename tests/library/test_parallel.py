"""Several ranks on one job (`steadydancer.parallel`): the layout rule; guidance-parallel passes in real gloo process
groups giving every rank every pass, in order; and the tiny pipeline run by 2 and 3 ranks, where only rank 0 encodes
and the latents are the single process's."""

import multiprocessing
import os
import socket

import pytest
import torch

from steadydancer.parallel import LayoutError, ParallelLayout, PipelineParallel, parallel_layout, shard_transformer


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


@pytest.mark.parametrize("ranks", [2, 4, 5, 8])
def test_sharded_weights_put_every_rank_in_one_group(ranks):
    assert parallel_layout(ranks, num_heads=40, sharded=True) == ParallelLayout(ranks, 1, ranks, shards=ranks)
    with pytest.raises(LayoutError, match="Sharded weights need one guidance group, not 2"):
        parallel_layout(ranks, num_heads=40, guidance_groups=2, sharded=True)


def test_the_speedup_counts_each_steps_passes():
    two_groups, ulysses = parallel_layout(2, num_heads=40), parallel_layout(2, num_heads=40, sharded=True)
    assert two_groups.speedup_for([3, 3]) == 1.5  # 2 + 1 passes: the slower group runs 2 of 3
    assert two_groups.speedup_for([2]) == 2.0
    assert two_groups.speedup_for([1, 1, 2, 1]) == 5 / 4  # one-pass steps run on both groups: no gain there
    assert ulysses.speedup_for([1, 1, 2, 1]) == 2.0  # the sequence split counts in every step
    assert parallel_layout(3, num_heads=40).speedup_for([3, 2]) == 5 / 2
    assert parallel_layout(1, num_heads=40).speedup_for([3, 1]) == 1.0


def test_a_sharded_layout_says_so():
    assert parallel_layout(2, num_heads=40, sharded=True).describe() == "2 ranks (Ulysses 2 x weights sharded 2 ways)"
    with pytest.raises(LayoutError, match="Ulysses degree 3, which does not divide the 40 attention heads"):
        parallel_layout(3, num_heads=40, sharded=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(worker, world, *args) -> list:
    """Runs `worker(rank, world, port, *args, queue)` in `world` processes; their reports, by rank."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    workers = [ctx.Process(target=worker, args=(r, world, port, *args, queue)) for r in range(world)]
    for w in workers:
        w.start()
    try:
        return sorted((queue.get(timeout=300) for _ in workers), key=lambda report: report[0])
    finally:
        for w in workers:
            w.join(30)


def _report_from_gloo_rank(rank, world, port, queue, body) -> None:
    """Joins a gloo group of `world` and puts (rank, *body(dist)) on `queue`; (rank, None, the error) when it raises,
    so the parent never waits for a report that will not come."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        queue.put((rank, *body(dist)))
    except Exception as error:
        queue.put((rank, None, repr(error)))
    finally:
        dist.destroy_process_group()


def _guidance_worker(rank, world, port, passes, queue):
    like = torch.zeros(2, 3)
    ran = []

    def call(indices):  # pass p's "velocity" is full of p + 1; each rank records what it computed
        ran.extend(indices)
        return [torch.full_like(like, p + 1.0) for p in indices]

    def body(dist):
        got = PipelineParallel(dist.group.WORLD, rank, world).run_passes(passes, like, call)
        return ran, [float(v[0, 0]) for v in got]

    _report_from_gloo_rank(rank, world, port, queue, body)


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs torch.distributed with gloo")
@pytest.mark.parametrize("world, passes", [(2, 3), (3, 3), (3, 2)])
def test_every_rank_gets_every_pass_once_computed(world, passes):
    results = _spawn(_guidance_worker, world, passes)
    computed = []
    for rank, ran, got in results:
        assert ran is not None, got
        assert got == [p + 1.0 for p in range(passes)]  # every pass, in order, on every rank
        assert ran == list(range(rank, passes, world))  # this rank's share only
        computed += ran
    assert sorted(computed) == list(range(passes))  # each pass computed exactly once


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_a_single_pass_runs_on_every_rank():
    """Nothing to split: every rank runs the step's one pass itself (as fast as one rank, nothing to gather)."""
    for rank, ran, got in _spawn(_guidance_worker, 2, 1):
        assert (ran, got) == ([0], [1.0]), got


def _failing_worker(rank, world, port, passes, failing_rank, error_type, queue):
    """`failing_rank`'s share of a step raises `error_type`, then rank 0's encoding raises; each rank reports what it
    raised at each point, then the result of a step that runs (every rank is still in step)."""
    like = torch.zeros(2, 3)

    def call(indices):
        if rank == failing_rank:
            raise error_type("out of memory in a pass" if error_type is torch.OutOfMemoryError else "a bad pass")
        return [torch.full_like(like, p + 1.0) for p in indices]

    def encode():
        raise error_type("the encoder failed")

    def body(dist):
        parallel = PipelineParallel(dist.group.WORLD, rank, world, share_group=dist.group.WORLD, source=rank == 0)
        raised = []
        for attempt in (lambda: parallel.run_passes(passes, like, call), lambda: parallel.once(encode, "cpu")):
            try:
                attempt()
                raised.append(None)
            except Exception as error:
                raised.append((type(error).__name__, getattr(error, "out_of_memory", None), str(error)))
        after = parallel.run_passes(passes, like, lambda indices: [torch.full_like(like, p + 1.0) for p in indices])
        return raised, [float(v[0, 0]) for v in after]

    _report_from_gloo_rank(rank, world, port, queue, body)


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs torch.distributed with gloo")
@pytest.mark.parametrize("world, passes, failing_rank, error_type",
                         [(2, 3, 1, torch.OutOfMemoryError), (3, 3, 0, ValueError), (2, 1, 1, ValueError)])
def test_a_ranks_failure_stops_every_rank_at_the_same_point(world, passes, failing_rank, error_type):
    """A rank whose share of a step raises (out of memory, or anything else; a one-pass step too) raises its error,
    every other rank `RankFailed` saying what happened where, and no rank waits for it; the same for rank 0's
    encoding. The next step runs on every rank."""
    oom = error_type is torch.OutOfMemoryError
    outcome = "ran out of memory" if oom else "failed"
    for rank, raised, after in _spawn(_failing_worker, world, passes, failing_rank, error_type):
        assert after == [p + 1.0 for p in range(passes)], after
        step, encoding = raised
        if rank == failing_rank:
            assert step[0] == error_type.__name__, step
        else:
            assert step == ("RankFailed", oom, f"guidance group {failing_rank} (its share of the step) {outcome}"), step
        assert encoding == ((error_type.__name__, None, "the encoder failed") if rank == 0 else
                            ("RankFailed", oom, f"rank 0 (encoding the inputs) {outcome}")), encoding


PIPELINE_CALL = dict(num_inference_steps=3, guidance_scale=3.0, pose_guidance_window=(0.0, 1.0),
                     batch_guidance=False, output_type="latent")


def _pipeline_worker(rank, world, port, checkpoints, inputs, sharded, queue):
    """The tiny pipeline on one rank of `world`: (rank, the encoders that ran here, the final latents, the share of
    the transformer blocks' weights this rank holds). `sharded`: one group sharding the weights, every pass on every
    rank; else one guidance group per rank."""
    from steadydancer.assembly import load_pipeline

    torch.set_num_threads(1)

    def body(dist):
        pipe = load_pipeline(*checkpoints, torch_dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        ran = []
        for name in ("text_encoder", "image_encoder"):
            if rank == 0:
                getattr(pipe, name).register_forward_hook(lambda *_, name=name: ran.append(name))
            else:  # the others need no encoders at all
                setattr(pipe, name, None)
        encode = pipe.vae.encode
        pipe.vae.encode = lambda *args, **kwargs: ran.append("vae") or encode(*args, **kwargs)
        in_blocks = sum(p.numel() for p in pipe.transformer.blocks.parameters())
        if sharded:
            from torch.distributed.device_mesh import init_device_mesh

            shard_transformer(pipe.transformer, init_device_mesh("cpu", (world,)))
            pipe.parallel = PipelineParallel(share_group=dist.group.WORLD, source=rank == 0)
        else:
            pipe.parallel = PipelineParallel(dist.group.WORLD, rank, world, share_group=dist.group.WORLD,
                                             source=rank == 0)
        held = sum(getattr(p, "_local_tensor", p).numel() for p in pipe.transformer.blocks.parameters())
        latents = pipe(**inputs, generator=torch.Generator().manual_seed(0), **PIPELINE_CALL).frames
        # As numpy: a tensor would travel as shared memory that vanishes when this process ends.
        return sorted(set(ran)), latents.numpy(), held / in_blocks

    _report_from_gloo_rank(rank, world, port, queue, body)


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs torch.distributed with gloo")
@pytest.mark.parametrize("world, sharded", [(2, False), (3, False), (2, True)])
def test_ranks_share_rank_0s_encodings_and_make_the_single_process_latents(world, sharded, tiny_checkpoints,
                                                                           make_tiny_pipe):
    from helpers.inputs import random_video_inputs

    inputs = random_video_inputs(96, 64, 9)
    torch.set_num_threads(1)
    alone = make_tiny_pipe()(**inputs, generator=torch.Generator().manual_seed(0), **PIPELINE_CALL).frames
    reports = _spawn(_pipeline_worker, world, tiny_checkpoints, inputs, sharded)
    for rank, ran, *report in reports:
        assert ran is not None, report
        latents, held = report
        assert ran == ([] if rank else ["image_encoder", "text_encoder", "vae"])  # only rank 0 encodes
        torch.testing.assert_close(torch.from_numpy(latents), alone, atol=1e-4, rtol=1e-4)
        # FSDP2 keeps 1/N of every block weight (a row more or less where N does not divide it)
        assert held == (pytest.approx(1 / world, abs=0.02) if sharded else 1.0)
