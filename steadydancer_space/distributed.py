"""Several GPUs behind one app: `torchrun --nproc-per-node N app.py`.

Rank 0 serves the page and owns the queue and the files. Each GPU call it makes is sent to every rank, which run it
together (`steadydancer.parallel`: rank 0 encodes the inputs and shares them, the passes of a step split across
guidance groups, Ulysses attention inside a group); rank 0 decodes and writes the result. Cancels are agreed at every
step, so all ranks stop after the same step. A rank whose encoding, share of a step or work after a step raises (out
of memory, say) tells the others at the next exchange, and every rank ends the job there: the visitor reads the
error and the ranks take the next job. Every other collective wait is bounded by `timeout` (a rank failing inside
Ulysses' or FSDP's exchanges in a pass, or gone): the job fails on rank 0 with a message. torchrun then stops the app
when a rank's process has ended; otherwise rank 0 serves alone (the other ranks leave when their wait ends), or,
holding only its share of sharded weights, refuses jobs until the app is restarted. Plain `python app.py` never
imports this module.
"""

import os
import shutil
import sys
import threading
import time
from datetime import timedelta

from steadydancer.parallel import (
    LayoutError,
    ParallelLayout,
    PipelineParallel,
    enable_ulysses,
    failure_code,
    parallel_layout,
    shard_transformer,
)

from .cancellation import GenerationCancelled
from .errors import WorkerLost, free_accelerator_memory, is_collective_failure

COLLECTIVE_TIMEOUT_SECONDS = 600  # the longest a rank waits for the others inside a job (one step, or a VAE decode)
POLL_SECONDS = 0.2  # how often an idle rank looks for the next job


def join(runtime, service) -> None:
    """Joins the ranks torchrun started. Rank 0 returns and serves the page; the others run its GPU calls until it
    stops, then exit the process. A rank count that cannot be laid out stops every rank with one line."""
    try:
        cluster = Cluster.start(runtime.pipe, runtime.device, shard=runtime.shards_transformer)
    except LayoutError as error:
        print(f"steadydancer: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    service.attach_cluster(cluster)
    if not cluster.leader:
        try:
            cluster.serve(service.generator)
        finally:
            shutil.rmtree(service.workspaces.root, ignore_errors=True)
        sys.exit(0)


class Cluster:
    """This process's place among the ranks, and the job channel between them."""

    def __init__(self, layout: ParallelLayout, rank: int, control, store):
        self.layout, self.rank, self.control, self.store = layout, rank, control, store
        self.job_lock = threading.Lock()  # rank 0: one job at a time across the ranks (`Generator`)
        self.jobs_sent = 0
        self.broken = False

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return not self.broken

    @classmethod
    def start(cls, pipe, device: str, shard: bool = False, timeout: float = COLLECTIVE_TIMEOUT_SECONDS) -> "Cluster":
        """Joins the process group torchrun describes and lays the ranks out for `pipe`'s transformer (`shard`: its
        blocks sharded across the ranks, where the memory plan says one GPU cannot hold them); raises
        `steadydancer.parallel.LayoutError` naming the numbers when they cannot be laid out."""
        import torch
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        wait = timedelta(seconds=timeout)
        cuda = device.startswith("cuda")
        dist.init_process_group("nccl" if cuda else "gloo", timeout=wait)  # torchrun's environment (env://)
        rank, world = dist.get_rank(), dist.get_world_size()
        if cuda:  # the GPU the runtime loaded this rank's weights on (torchrun's LOCAL_RANK)
            index = torch.device(device).index
            torch.cuda.set_device(index if index is not None else rank % torch.cuda.device_count())
        layout = parallel_layout(world, pipe.transformer.config.num_attention_heads, sharded=shard)
        control = dist.new_group(backend="gloo", timeout=wait)  # jobs and cancel votes: small CPU objects
        store = _job_store(rank, world, control, wait)
        mesh = init_device_mesh("cuda" if cuda else "cpu", (layout.guidance_groups, 1, layout.ulysses_degree),
                                mesh_dim_names=("guidance", "ring", "ulysses"))
        if layout.shards > 1:  # one guidance group: the ranks sharing weights run the same calls
            shard_transformer(pipe.transformer, mesh["ulysses"])
        if layout.ulysses_degree > 1:
            enable_ulysses(pipe.transformer, mesh["ring", "ulysses"], layout.ulysses_degree)
        guidance = mesh["guidance"]
        pipe.parallel = PipelineParallel(guidance.get_group(), guidance.get_local_rank(), layout.guidance_groups,
                                         share_group=control, source=rank == 0)
        if rank != 0:  # rank 0 encodes and shares: the text and image encoders' memory is freed here
            pipe.text_encoder = None
            pipe.image_encoder = None
            free_accelerator_memory()
        print(f"SteadyDancer app: rank {rank} of {world} (pid {os.getpid()}), {layout.describe()}.", flush=True)
        return cls(layout, rank, control, store)

    # ---------------------------------------------------------------- rank 0
    def send(self, job: tuple) -> None:
        """Wakes the other ranks and hands them `job` (rank 0 only)."""
        import torch.distributed as dist

        self.jobs_sent += 1
        self.store.set(f"job/{self.jobs_sent}", b"1")
        dist.broadcast_object_list([job], src=0, group=self.control)

    def stop_workers(self) -> None:
        if self.leader and self.active:
            self.store.set("stop", b"1")

    @property
    def can_serve_alone(self) -> bool:
        """Whether rank 0 holds the whole model (not a share of sharded weights)."""
        return self.layout.shards == 1

    def fail(self, pipe, error: BaseException) -> WorkerLost:
        """After a failed collective: rank 0 goes on alone (it runs every pass and encodes for itself again), unless
        it holds only a share of the weights."""
        self.broken = True
        pipe.parallel = None
        then = ("serving on rank 0 alone" if self.can_serve_alone else
                "rank 0 holds only a share of the weights, so no job can run until the app is restarted")
        print(f"steadydancer: a rank failed during a job ({type(error).__name__}: {error}); {then}.", flush=True)
        return WorkerLost(error, alone=self.can_serve_alone)

    # ---------------------------------------------------------------- every rank
    def agree(self, cancelled: bool, failure: BaseException | None) -> tuple[bool, int]:
        """The vote after each step, the same on every rank: whether rank 0's job is cancelled, and
        `steadydancer.parallel.failure_code` of the worst failure of a rank's work after the step."""
        import torch
        import torch.distributed as dist

        if not self.active:
            return cancelled, failure_code(failure)
        votes = torch.tensor([1 if cancelled else 0, failure_code(failure)])
        dist.all_reduce(votes, op=dist.ReduceOp.MAX, group=self.control)
        return bool(votes[0]), int(votes[1])

    def serve(self, generator) -> None:
        """The loop of ranks other than 0: wait for a job, run it with rank 0, until rank 0 stops."""
        import torch.distributed as dist

        received = 0
        while True:
            key = f"job/{received + 1}"
            while not self.store.check([key]):
                if self.store.check(["stop"]):
                    return
                time.sleep(POLL_SECONDS)
            received += 1
            box = [None]
            dist.broadcast_object_list(box, src=0, group=self.control)
            kind, *args = box[0]
            try:
                if kind == "frames":
                    generator.generate_frames(*args)
                elif kind == "long":
                    generator.generate_long(*args, run_window_on_gpu=generator.generate_window)
            except GenerationCancelled:
                pass
            except Exception as error:  # every rank stopped the job at the same point (`RankFailed`)
                if is_collective_failure(error):  # rank 0 gave up on this rank: leave without failing torchrun
                    print(f"steadydancer: rank {self.rank} lost the others ({type(error).__name__}); it stops.",
                          flush=True)
                    return
                print(f"steadydancer: rank {self.rank}: the job failed ({type(error).__name__}: {error}); waiting "
                      "for the next one.", flush=True)
                free_accelerator_memory()


def _job_store(rank: int, world: int, control, wait: timedelta):
    """A key-value store beside the process group, so idle ranks wait for jobs without a collective (whose wait the
    timeout would cut): rank 0 opens it on a free port and tells the others (one machine: `--standalone`)."""
    import torch.distributed as dist

    host = "127.0.0.1"
    store = dist.TCPStore(host, 0, world, True, wait, wait_for_workers=False) if rank == 0 else None
    port = [store.port if store is not None else None]
    dist.broadcast_object_list(port, src=0, group=control)
    return store if store is not None else dist.TCPStore(host, port[0], world, False, wait)


def describe(cluster: "Cluster | None") -> str:
    return cluster.layout.describe() if cluster is not None and cluster.active else "1 rank"

