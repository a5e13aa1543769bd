"""Cancellation of running jobs, by job id, visible across processes (the app and a ZeroGPU worker)."""

import contextlib
import os
import threading
import time


class GenerationCancelled(Exception):
    """The visitor cancelled; raised from the step callback so the VAE decode of a half-denoised video is skipped."""


class CancelRegistry:
    """Cancellation of running jobs, by job id, visible across processes.

    On ZeroGPU the GPU part runs in a worker process that the app's cancel (set in the main process) cannot reach
    through memory, so a cancel is a marker file in `directory`, which both processes see; `cancelled` is one
    `os.path.exists` per denoising step.

    A cancel can also come before its job reaches the server at all: `gradio_client` sends it while it is still
    uploading the inputs, then submits the job anyway. `cancel_session` records such a cancel of a session with
    nothing running, and the session's next job that starts within `early_window` seconds is cancelled at once.
    """

    MAX_EARLY_CANCELS = 10_000  # remembered at once (within `early_window`); more are dropped, not stored

    def __init__(self, directory: str, early_window: float = 10.0):
        self.directory = directory
        self.early_window = early_window
        os.makedirs(directory, exist_ok=True)
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._early: dict[str, float] = {}  # session -> when a cancel came with nothing of it running

    def _marker(self, job_id: str) -> str:
        return os.path.join(self.directory, f"{job_id}.cancel")

    def start(self, job_id: str, session: str) -> None:
        """Registers a job of `session`; it starts cancelled when a cancel of the session came just before it."""
        with self._lock:
            self._running.add(job_id)
            early = self._early.pop(session, None)
        if early is not None and time.monotonic() - early < self.early_window:
            self.cancel(job_id)

    def cancel(self, job_id: str) -> None:
        with open(self._marker(job_id), "w"):
            pass

    def cancel_session(self, session: str, early: bool = True) -> None:
        """Cancels `session`'s running jobs; with none running and `early` (the cancel named no event: its job has
        not reached the server yet), the session's next job. A cancel naming an event that is not running (one still
        queued, which Gradio drops, or one that just ended) must not cancel the visitor's next job."""
        prefix = f"{session}-"
        now = time.monotonic()
        with self._lock:
            running = [job for job in self._running if job.startswith(prefix)]
            if not running and early:
                # Expired entries go first: sessions come from requests, so the table must not grow without bound.
                self._early = {s: t for s, t in self._early.items() if now - t < self.early_window}
                if len(self._early) < self.MAX_EARLY_CANCELS:
                    self._early[session] = now
        for job_id in running:
            self.cancel(job_id)

    def cancel_all(self) -> None:
        """Cancels every running job (the app is stopping)."""
        with self._lock:
            running = list(self._running)
        for job_id in running:
            self.cancel(job_id)

    def cancelled(self, job_id: str | None) -> bool:
        return job_id is not None and os.path.exists(self._marker(job_id))

    def finish(self, job_id: str) -> None:
        with self._lock:
            self._running.discard(job_id)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._marker(job_id))
