"""A torchrun app's processes: each loads on its own GPU, and when another rank is lost
(`steadydancer_space.distributed.Cluster.fail`) rank 0 goes on alone where it holds the whole model, else refuses
every job asking for a restart."""

from types import SimpleNamespace

import pytest

from steadydancer.parallel import parallel_layout
from steadydancer_space.distributed import Cluster
from steadydancer_space.errors import WorkerLost
from steadydancer_space.generation import Generator


def lose_a_rank(sharded: bool):
    layout = parallel_layout(2, num_heads=40, sharded=sharded)
    cluster = Cluster(layout, rank=0, control=None, store=None)
    pipe = SimpleNamespace(parallel=object())
    generator = Generator(runtime=SimpleNamespace(pipe=pipe), cancels=None, faults=None)
    generator.cluster = cluster
    return cluster.fail(pipe, ConnectionResetError("peer gone")), pipe, generator


def test_with_whole_weights_rank_0_goes_on_alone(capsys):
    error, pipe, generator = lose_a_rank(sharded=False)
    assert isinstance(error, WorkerLost) and "ConnectionResetError" in str(error) and "press Animate again" in str(error)
    assert pipe.parallel is None  # every pass and every encoder run here again
    generator._check_ranks()  # the next job runs
    assert "serving on rank 0 alone" in capsys.readouterr().out


def test_with_sharded_weights_every_later_job_asks_for_a_restart(capsys):
    error, _, generator = lose_a_rank(sharded=True)
    assert "the app must be restarted" in str(error)
    with pytest.raises(WorkerLost, match="cannot go on: the app must be restarted"):
        generator._check_ranks()
    assert "no job can run until the app is restarted" in capsys.readouterr().out


def test_each_torchrun_process_loads_on_its_own_gpu(monkeypatch):
    import torch

    from steadydancer_space.config import AppConfig
    from steadydancer_space.runtime import _device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    config = AppConfig.from_env({"WORLD_SIZE": "4", "LOCAL_RANK": "3"})
    assert _device(config) == "cuda:3"  # not every rank's weights on GPU 0
    assert _device(AppConfig.from_env({})) == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _device(config) == "cpu"


def test_a_cancel_waits_for_the_vote_when_ranks_run_the_job_together(tmp_path):
    """Stopping rank 0's loop at once would leave the other ranks waiting for its share of the next step: with
    several ranks only the vote after the step stops the job, on every rank at once."""
    from steadydancer_space.cancellation import CancelRegistry

    interrupted = []
    pipe = SimpleNamespace(interrupt_generation=lambda: interrupted.append(True))
    for together in (True, False):
        generator = Generator(runtime=SimpleNamespace(pipe=pipe), cancels=CancelRegistry(str(tmp_path)), faults=None)
        if together:
            generator.cluster = Cluster(parallel_layout(2, num_heads=40), rank=0, control=None, store=None)
        generator.running_job = "job"
        generator.interrupt("job")
        assert generator.cancels.cancelled("job")
        assert interrupted == ([] if together else [True])
