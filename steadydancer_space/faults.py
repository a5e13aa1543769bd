"""Test hooks of tiny mode: injected faults and counters of the GPU work, so tests can check the app's behaviour
under failure and load from the outside (through `gradio_client`) without a GPU.

STEADYDANCER_FAULT (read only in tiny mode; ignored with a notice otherwise) is a comma-separated list of
- `oom_once`: the next generation raises `torch.OutOfMemoryError` inside the denoising loop (from the step callback,
  after the first step; nothing is allocated);
- `oom_seed=N`: every generation with seed N does the same (deterministic in a test module that shares one app);
- `oom_rank=R`: the next generation raises it on rank R alone (torchrun; 0 without), inside the transformer's
  second forward there: a failure in the middle of one rank's share of a step.
"""

import sys
import threading
import time
from contextlib import contextmanager

from .config import FAULT_ENV


class FaultPlan:
    def __init__(self, spec: str = ""):
        self._lock = threading.Lock()
        self.oom_once = False
        self.oom_seeds: set[int] = set()
        self.oom_rank: int | None = None
        for token in (t.strip() for t in (spec or "").split(",")):
            if not token:
                continue
            if token == "oom_once":
                self.oom_once = True
            elif token.startswith(("oom_seed=", "oom_rank=")):
                name, _, value = token.partition("=")
                try:
                    number = int(value)
                except ValueError:
                    raise ValueError(f"{FAULT_ENV}: bad number in {token!r}") from None
                if name == "oom_seed":
                    self.oom_seeds.add(number)
                else:
                    self.oom_rank = number
            else:
                raise ValueError(f"{FAULT_ENV}: unknown fault {token!r} (known: oom_once, oom_seed=N, oom_rank=R)")

    @classmethod
    def for_mode(cls, spec: str, tiny: bool) -> "FaultPlan":
        if spec and not tiny:
            print(f"steadydancer: {FAULT_ENV} is ignored outside tiny mode.", file=sys.stderr, flush=True)
            return cls()
        return cls(spec)

    def take_oom(self, seed: int) -> bool:
        """Whether the generation with this seed is to fail with an out-of-memory error (consumes `oom_once`)."""
        with self._lock:
            if self.oom_once:
                self.oom_once = False
                return True
            return int(seed) in self.oom_seeds

    def take_rank_oom(self, rank: int) -> bool:
        """Whether this generation is to fail on this rank, inside its transformer (consumes `oom_rank`)."""
        with self._lock:
            if self.oom_rank != rank:
                return False
            self.oom_rank = None
            return True

    def describe(self) -> dict:
        with self._lock:
            return {"oom_once": self.oom_once, "oom_seeds": sorted(self.oom_seeds), "oom_rank": self.oom_rank}


@contextmanager
def failing_forward(module, calls_before: int, message: str):
    """`module`'s forward raises `torch.OutOfMemoryError(message)` after `calls_before` calls, as CUDA would in the
    middle of a pass."""
    import torch

    calls = 0

    def fail(_module, _args):
        nonlocal calls
        calls += 1
        if calls > calls_before:
            raise torch.OutOfMemoryError(message)

    handle = module.register_forward_pre_hook(fail)
    try:
        yield
    finally:
        handle.remove()


class GpuStats:
    """Counts of the GPU part (`generate_frames`): how many run now, the most at once, outcomes."""

    def __init__(self):
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.started = 0
        self.succeeded = 0
        self.failed = 0
        self.out_of_memory = 0
        self.cancelled = 0
        self.intervals: list[tuple[float, float]] = []  # (start, end) of the last generations, monotonic seconds

    @contextmanager
    def track(self):
        with self._lock:
            self.running += 1
            self.started += 1
            self.peak = max(self.peak, self.running)
        start = time.monotonic()
        outcome = "failed"
        try:
            yield
            outcome = "succeeded"
        except BaseException as error:
            from .cancellation import GenerationCancelled
            from .errors import is_out_of_memory

            outcome = "cancelled" if isinstance(error, GenerationCancelled) else (
                "out_of_memory" if is_out_of_memory(error) else "failed")
            raise
        finally:
            with self._lock:
                self.running -= 1
                setattr(self, outcome, getattr(self, outcome) + 1)
                self.intervals = (self.intervals + [(start, time.monotonic())])[-50:]

    def snapshot(self) -> dict:
        with self._lock:
            return {k: getattr(self, k) for k in ("running", "peak", "started", "succeeded", "failed",
                                                  "out_of_memory", "cancelled")} | {
                "intervals": [list(i) for i in self.intervals]}
