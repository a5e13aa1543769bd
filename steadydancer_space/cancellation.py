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

    A cancel names one job: the session that sent it and the job's event (Gradio's event id). `cancel_event` stops
    that job when it runs, or, when it has not started yet (still queued), makes it start cancelled; another
    session naming the event changes nothing. A cancel can also come before its job reaches the server at all
    (`gradio_client` sends it while still uploading the inputs, then submits the job anyway, naming no event):
    `cancel_next` makes the session's next job that starts within `early_window` seconds start cancelled, or stops
    the session's job that started at most `JUST_STARTED` seconds before the cancel came (the server took the job
    before the client learnt its event).
    """

    MAX_PENDING_CANCELS = 10_000  # cancels of jobs not started yet remembered at once; more are dropped, not stored
    QUEUED_WINDOW = 6 * 3600.0  # how long a cancel of a queued job is kept for it: longer than any queue wait
    JUST_STARTED = 2.0  # a job this young may be the one a cancel naming no event meant; an older one never is

    def __init__(self, directory: str, early_window: float = 10.0):
        self.directory = directory
        self.early_window = early_window
        os.makedirs(directory, exist_ok=True)
        self._lock = threading.Lock()
        self._running: dict[str, tuple[str, str | None]] = {}  # job id -> (session, event id)
        self._early: dict[str, float] = {}  # session -> when a cancel naming no event came
        self._started: dict[str, float] = {}  # job id -> when it started
        self._queued: dict[tuple[str, str], float] = {}  # (session, event id) -> when a cancel of it came

    def _marker(self, job_id: str) -> str:
        return os.path.join(self.directory, f"{job_id}.cancel")

    def start(self, job_id: str, session: str, event_id: str | None = None) -> bool:
        """Registers a job of `session` (Gradio's `event_id`); True when it starts cancelled (a cancel named it
        while it was queued, or a cancel naming no event came from its session just before)."""
        now = time.monotonic()
        with self._lock:
            self._running[job_id] = (session, event_id)
            self._started[job_id] = now
            early = self._early.pop(session, None)
            named = self._queued.pop((session, event_id), None) if event_id else None
        cancelled = named is not None or (early is not None and now - early < self.early_window)
        if cancelled:
            self.cancel(job_id)
        return cancelled

    def cancel(self, job_id: str) -> None:
        with open(self._marker(job_id), "w"):
            pass

    def cancel_event(self, session: str, event_id: str) -> None:
        """Cancels the job of `session` with `event_id`: at once when it runs, when it starts otherwise."""
        now = time.monotonic()
        with self._lock:
            running = [job for job, owner in self._running.items() if owner == (session, event_id)]
            if not running:
                self._queued = self._remember(self._queued, (session, event_id), now, self.QUEUED_WINDOW)
        for job_id in running:
            self.cancel(job_id)

    def cancel_next(self, session: str) -> None:
        """Cancels the job of `session` that has just started, else its next job that starts within `early_window`
        seconds (a cancel naming no event)."""
        now = time.monotonic()
        with self._lock:
            young = [job for job, (owner, _) in self._running.items()
                     if owner == session and now - self._started.get(job, 0.0) <= self.JUST_STARTED]
            if not young:
                self._early = self._remember(self._early, session, now, self.early_window)
        for job_id in young[-1:]:
            self.cancel(job_id)

    def _remember(self, table: dict, key, now: float, window: float) -> dict:
        # Expired entries go first: keys come from requests, so the table must not grow without bound.
        table = {k: t for k, t in table.items() if now - t < window}
        if len(table) < self.MAX_PENDING_CANCELS:
            table[key] = now
        return table

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
            self._running.pop(job_id, None)
            self._started.pop(job_id, None)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._marker(job_id))
