"""SteadyDancer Space: animate a photo of a person with the motion of a driving video (or a keypoint JSON).

    python app.py                 # the real model from the Hub, on a GPU (ZeroGPU, A100/H100, ...)
    python app.py --tiny          # tiny random weights + stand-in poses: runs on a CPU, the output is noise
    python app.py --help          # every setting; each has a STEADYDANCER_* environment variable

    torchrun --standalone --nproc-per-node N app.py   # N GPUs on one job (`steadydancer_space.distributed`)

Host and port: GRADIO_SERVER_NAME, GRADIO_SERVER_PORT. This file is the wiring: the `spaces.GPU` functions, the API
handlers (their docstrings are the API doc) and the page's events; the components are `steadydancer_space.layout`.
Handlers turn UI values into a request that is resolved once (`SERVICE.plan`) and the service runs the steps. The
models load at import time (ZeroGPU moves them to its GPU when a task starts); each GPU call asks for the plan's
estimate of it.
"""

import sys

try:  # ZeroGPU: `spaces` must come before torch. Elsewhere its decorator is a no-op, and it is optional.
    import spaces
except ImportError:
    spaces = None

from steadydancer_space.config import AppConfig, ConfigError, apply_environment, parse_config

try:
    CONFIG = parse_config(sys.argv[1:]) if __name__ == "__main__" else AppConfig.from_env()
except ConfigError as error:
    print(f"steadydancer: {error}", file=sys.stderr)
    sys.exit(2)
apply_environment(CONFIG)

import atexit  # noqa: E402
import inspect  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import uuid  # noqa: E402

import gradio as gr  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from steadydancer_space import history, page, zerogpu  # noqa: E402
from steadydancer_space.cancellation import GenerationCancelled  # noqa: E402
from steadydancer_space.errors import user_errors  # noqa: E402
from steadydancer_space.examples import example_files, example_named  # noqa: E402
from steadydancer_space.layout import CSS, HEAD, build_layout  # noqa: E402
from steadydancer_space.middleware import CancelListener, MissingArgumentDefaults  # noqa: E402
from steadydancer_space.page import pass_through_inputs, publish, reporter  # noqa: E402
from steadydancer_space.plan import JobPlan  # noqa: E402
from steadydancer_space.pose_editor import editor_state  # noqa: E402
from steadydancer_space.poses import FAKE_POSES_NOTE  # noqa: E402
from steadydancer_space.reports import plain_estimate  # noqa: E402
from steadydancer_space.request import DEFAULT_PRESET, DEFAULT_SEED, MAX_SEED  # noqa: E402
from steadydancer_space.runtime import ModelLoadError, load_runtime  # noqa: E402
from steadydancer_space.service import AnimationService  # noqa: E402
from steadydancer_space.uploads import InputError  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES_DIR = os.path.join(HERE, "examples")
# Served from examples/ as they are, never copied into Gradio's temp folder: copies there are swept after the file
# time-to-live, or at once when another instance sharing the folder stops.
gr.set_static_paths([EXAMPLES_DIR])
EXAMPLE_SEED = DEFAULT_SEED

try:
    RUNTIME = load_runtime(CONFIG)
except ModelLoadError as error:
    print(f"\n{error}\n", file=sys.stderr)
    sys.exit(2)
SERVICE = AnimationService(RUNTIME, output_max_age=CONFIG.file_ttl)
GENERATOR = SERVICE.generator
FIELDS = SERVICE.fields
if CONFIG.ranks > 1:  # torchrun: rank 0 serves the page; the other ranks run its GPU calls with it, then exit here
    from steadydancer_space.distributed import join

    join(RUNTIME, SERVICE)
# On ZeroGPU the defaults (and the examples) fit the per-call cap with a margin, with the fast preset.
DEFAULT_RESOLUTION, DEFAULT_FRAMES = SERVICE.planner.default_choices()
print(f"SteadyDancer app: {'TINY (noise) ' if RUNTIME.tiny else ''}models loaded in {RUNTIME.load_seconds:.1f} s "
      f"on {RUNTIME.device}; GPU estimates for {SERVICE.planner.gpu}.", flush=True)
# ZeroGPU: the transformer blocks compiled ahead of time in one start-up GPU call; the eager forward serves the rest.
STARTUP = (zerogpu.prepare(RUNTIME, SERVICE.planner, DEFAULT_FRAMES, spaces)
           if spaces is not None and zerogpu.serves_ahead_of_time(CONFIG) else None)


# ---------------------------------------------------------------------- GPU part
def gpu_task(fn):
    """`spaces.GPU` on ZeroGPU, asking for the plan's estimate of one call on the size the estimates price;
    elsewhere the function itself."""
    if spaces is None:
        return fn
    return spaces.GPU(duration=lambda plan, *args, **kwargs: plan.estimate.seconds, size=zerogpu.gpu_size(CONFIG))(fn)


@gpu_task
def generate_on_gpu(plan: JobPlan, reference, poses, job_id, preview_dir=None, progress=None):
    """Arrays in, uint8 frames out: what ZeroGPU ships to its GPU worker and back."""
    return GENERATOR.generate_frames(plan, reference, poses, job_id, reporter(progress), preview_dir)


@gpu_task
def generate_window_on_gpu(plan: JobPlan, job_id, index, state):
    """One window of a long video, its own GPU call: what it carries to the next window comes back with its frames."""
    return GENERATOR.generate_window(plan, job_id, index, state)


if spaces is not None and zerogpu.serves_ahead_of_time(CONFIG):  # elsewhere the pose step runs where it is
    zerogpu.pose_step_on_gpu(SERVICE, spaces)


# ---------------------------------------------------------------------- handlers
def _api_values(local_values: dict) -> dict:
    """A handler's API parameters by name (its `locals()` at entry, without Gradio's injected arguments)."""
    return {k: v for k, v in local_values.items() if k not in ("request", "progress")}


def _warn(note: str) -> None:
    """The pose step's warnings (lost person, several people, padded ending) as toasts too; they are in the report."""
    if note != FAKE_POSES_NOTE:
        gr.Warning(note)


@user_errors
def extract_poses(reference, driving_video, keypoints, resolution, num_frames, motion, align_to_reference,
                  smooth_start, smooth_start_frames, auto_start, fidelity="default", reference_keypoints=None,
                  pose_edits="", progress=gr.Progress()):
    """Detects and aligns the poses (on ZeroGPU in a short GPU call of its own). Returns the pose video, the
    reference with the first aligned pose drawn over it, a report with warnings, the negative pose video and the raw
    driving keypoints (JSON)."""
    plan = SERVICE.plan(SERVICE.request(**_api_values(locals())))
    with SERVICE.workspaces.scoped() as work:  # deleted on the way out; the outputs go to Gradio's cache first
        result = SERVICE.extract(plan, work, reporter(progress))
        for note in result.step.warnings:
            _warn(note)
        return (publish(result.pose_video), publish(result.alignment_image), result.report,
                publish(result.negative_pose_video), publish(result.poses_json))


@user_errors
def show_pose_editor(*values):
    """The editor's view of the poses just extracted (the pose step's cache answers)."""
    plan = SERVICE.plan(SERVICE.request(**dict(zip(inspect.signature(extract_poses).parameters, values))))
    return editor_state(SERVICE.poses(plan))


def _event_id() -> str | None:
    """The running handler's Gradio event id (the one a client's cancel names)."""
    # gr.Request does not expose the event id; Gradio keeps it in this context variable for the handler's duration.
    from gradio.context import LocalContext

    return LocalContext.event_id.get(None)


async def _animate(plan: JobPlan, request: gr.Request, progress):
    """One animation job in a worker thread, streaming the preview each denoising step predicts, then the outputs.
    A cancel naming the job stops it after the current step (`cancel_job`)."""
    session = getattr(request, "session_hash", None) or "local"
    job_id = f"{session}-{uuid.uuid4().hex[:8]}"
    if SERVICE.cancels.start(job_id, session, _event_id()):
        SERVICE.cancels.finish(job_id)
        raise GenerationCancelled()
    work = SERVICE.workspaces.new()  # deleted when the job ends (success, error, OOM or cancel)

    def run_on_gpu(plan, reference, poses, job_id):
        return generate_on_gpu(plan, reference, poses, job_id, work, progress)

    def run():
        try:
            result = SERVICE.animate(plan, job_id, work, run_on_gpu, generate_window_on_gpu, reporter(progress),
                                     _warn)
            return (publish(result.video), publish(result.pose_video), result.seed, result.report,
                    publish(result.side_by_side), result.recipe)
        finally:  # in the worker thread: a cancelled request's step is still running until here
            SERVICE.cancels.finish(job_id)
            shutil.rmtree(work, ignore_errors=True)

    async for outputs in page.stream_job(run, work, lambda: SERVICE.interrupt(job_id), num_outputs=6):
        yield outputs


@user_errors
async def animate(reference, driving_video, keypoints, prompt, negative_prompt, resolution, num_frames, motion,
                  align_to_reference, smooth_start, smooth_start_frames, auto_start, guidance_scale,
                  pose_guidance_scale, window_start, window_end, steps, shift, seed, randomize_seed,
                  fidelity="default", preset=DEFAULT_PRESET, reference_keypoints=None, pose_edits="",
                  request: gr.Request = None, progress=gr.Progress()):
    """Animates the reference with the driving motion. Returns the video (H.264 mp4, 16 fps, with the driving video's
    audio when it has some), the pose video, the seed used, a report, the side-by-side video (photo, poses, result),
    the recipe (the API values that make the same video again) and the last preview shown while it ran."""
    job = SERVICE.request(**_api_values(locals()), random_seed=lambda: random.randint(0, MAX_SEED))
    async for outputs in _animate(SERVICE.plan(job), request, progress):
        yield outputs


MAX_EXAMPLE_RESULTS = 64
EXAMPLE_RESULTS: dict = {}  # (example, speed settings) -> its outputs, made at the first click (files in Gradio's cache)


@user_errors
async def animate_example(example_name, preset=DEFAULT_PRESET, steps=None, guidance_scale=None,
                          request: gr.Request = None, progress=gr.Progress()):
    """An example's result with the speed the visitor chose, from its files in examples/ (Gradio's copies may have
    been swept); made once per example and speed."""
    example = example_named(example_name)
    reference, driving_video, keypoints, reference_keypoints = example_files(example, EXAMPLES_DIR)
    job = SERVICE.request(reference, driving_video, keypoints, reference_keypoints=reference_keypoints,
                          prompt=example.prompt, num_frames=min(example.num_frames, DEFAULT_FRAMES),
                          resolution=DEFAULT_RESOLUTION, seed=EXAMPLE_SEED, randomize_seed=False, preset=preset,
                          steps=steps, guidance_scale=guidance_scale, pose_edits=example.pose_edits)
    key = (example.label, tuple(sorted(job.recipe().items())))
    if page.still_there(outputs := EXAMPLE_RESULTS.get(key)):
        yield outputs
        return
    async for outputs in _animate(SERVICE.plan(job), request, progress):
        yield outputs
    if len(EXAMPLE_RESULTS) >= MAX_EXAMPLE_RESULTS:  # custom sliders make many keys: keep the newest only
        EXAMPLE_RESULTS.pop(next(iter(EXAMPLE_RESULTS)))
    EXAMPLE_RESULTS[key] = outputs


def estimate(reference, resolution, num_frames, steps, guidance_scale, pose_guidance_scale, window_start,
             window_end, preset=DEFAULT_PRESET):
    """The GPU time a generation with these settings needs (markdown). Uses the reference's aspect when given."""
    try:
        plan = SERVICE.plan(SERVICE.request(**_api_values(locals())))
    except InputError as error:  # shown in place while the visitor is still choosing
        return f"Estimate unavailable: {error}"
    return plain_estimate(plan, RUNTIME.tiny)


def cancel_job(session: str, fn_index: int | None, event_id: str | None) -> bool:
    """A cancel from `session` (seen by `CancelListener` on Gradio's /cancel route) of an animation: it stops the
    job of that session with that event and nothing else, which ends with "Cancelled." for its caller; a cancel
    naming no event (its job has not reached the server yet) cancels the session's next job. False for other
    endpoints' cancels, which Gradio handles."""
    fn = demo.fns.get(fn_index) if fn_index is not None else None
    if getattr(fn, "name", None) not in (animate.__name__, animate_example.__name__):
        return False
    if event_id is None:
        SERVICE.cancels.cancel_next(session)
    else:
        SERVICE.cancels.cancel_event(session, event_id)
    print(f"steadydancer: cancel from session {session[:8]}", flush=True)
    return True


def tiny_stats() -> dict:
    """Tiny mode only (tests): the GPU part's counters, live request workspaces, pending faults, queue settings."""
    return {**GENERATOR.stats.snapshot(), "workspaces": SERVICE.workspaces.count(),
            "faults": GENERATOR.faults.describe(), "queue_size": CONFIG.queue_size, "concurrency": CONFIG.concurrency}


FRAME_RANGE = (int(FIELDS["num_frames"].minimum), CONFIG.max_frames)


# ---------------------------------------------------------------------- UI
def build_demo() -> gr.Blocks:
    demo, ui = build_layout(CONFIG, FIELDS, RUNTIME.tiny, DEFAULT_RESOLUTION, DEFAULT_FRAMES, EXAMPLE_SEED,
                            EXAMPLES_DIR)
    private = dict(queue=False, api_visibility="private")
    with demo:
        start_job = dict(fn=page.start_job, inputs=[ui.reference, ui.driving_video, ui.keypoints,
                                                    ui.reference_keypoints],
                         outputs=[ui.job_files, ui.result, ui.seed_used, ui.result_report, ui.side_by_side, ui.recipe,
                                  ui.preview, ui.demo_media, ui.cancel_btn, ui.reuse_result, ui.download_result],
                         **private)
        # New API parameters go at the end, so scripts passing values by position keep working.
        pose_inputs = [ui.reference, ui.driving_video, ui.keypoints, ui.resolution, ui.num_frames, ui.motion,
                       ui.align_to_reference, ui.smooth_start, ui.smooth_start_frames, ui.auto_start, ui.fidelity,
                       ui.reference_keypoints, ui.pose_edits]
        ui.extract_btn.click(
            extract_poses, pose_inputs, [ui.pose_video, ui.alignment, ui.pose_report, ui.negative_pose_video,
                                         ui.poses_json],
            api_name="extract_poses", concurrency_limit=2, concurrency_id="poses", show_progress_on=[ui.pose_video],
        ).success(show_pose_editor, pose_inputs, ui.pose_editor, **private)
        ui.extract_btn.click(lambda: gr.Accordion(open=True), None, ui.poses_box, **private)
        animate_inputs = [ui.reference, ui.driving_video, ui.keypoints, ui.prompt, ui.negative_prompt, ui.resolution,
                          ui.num_frames, ui.motion, ui.align_to_reference, ui.smooth_start, ui.smooth_start_frames,
                          ui.auto_start, ui.guidance_scale, ui.pose_guidance_scale, ui.window_start, ui.window_end,
                          ui.steps, ui.shift, ui.seed, ui.randomize_seed, ui.fidelity, ui.preset,
                          ui.reference_keypoints, ui.pose_edits]
        animate_outputs = [ui.result, ui.pose_video, ui.seed_used, ui.result_report, ui.side_by_side, ui.recipe,
                           ui.preview]
        animate_event = ui.animate_btn.click(**start_job).then(
            animate, animate_inputs, animate_outputs,
            api_name="animate", concurrency_limit=CONFIG.concurrency, concurrency_id="gpu", show_progress_on=[ui.result],
        )
        # An example fills the form, then plays its result at the speed chosen (made at its first click).
        example_event = ui.example_gallery.select(
            page.fill_example(EXAMPLES_DIR), None, [ui.example_name, ui.reference, ui.driving_video, ui.keypoints,
                                                    ui.reference_keypoints, ui.prompt, ui.num_frames, ui.pose_edits,
                                                    ui.pose_fit], **private,
        ).then(**start_job).then(
            animate_example, [ui.example_name, ui.preset, ui.steps, ui.guidance_scale], animate_outputs,
            api_visibility="private", concurrency_limit=CONFIG.concurrency, concurrency_id="gpu",
            show_progress_on=[ui.result],
        )
        for job in (animate_event, example_event):
            job.success(history.add, [ui.history, ui.job_files, ui.result, ui.seed_used, ui.recipe, ui.side_by_side,
                                      ui.pose_video], [ui.history, ui.history_gallery, ui.seed_used,
                                                       ui.reuse_result, ui.download_result], **private)
            job.then(page.job_ended, None, ui.cancel_btn, **private)
        ui.cancel_btn.click(page.cancelled_note, None, [ui.result_report, ui.cancel_btn],
                            cancels=[animate_event, example_event], **private)
        form = [getattr(ui, name) for name in history.FORM_FIELDS]
        ui.history_gallery.select(history.select, ui.history,
                                  [ui.history_video, ui.history_recipe, ui.history_selected, ui.reuse_history,
                                   ui.download_history], **private)
        form_fills = [ui.reuse_history.click(history.reuse_entry, [ui.history, ui.history_selected], form, **private),
                      ui.reuse_result.click(history.reuse_result, [ui.job_files, ui.recipe], form, **private)]
        pass_through_inputs(animate_inputs)  # every value is validated once, by the request

        page.wire_form(demo, ui, private, estimate, FRAME_RANGE, form_fills)
        if RUNTIME.tiny:  # counters for the reliability tests; never in real mode
            gr.api(tiny_stats, api_name="tiny_stats", queue=False, api_visibility="undocumented")
    return demo


demo = build_demo()
# What a call sending fewer values than an endpoint takes gets for the rest (`MissingArgumentDefaults`): the
# page's own starting values, which are also what gradio_client fills in.
# A call written before `preset` existed gave its own steps and guidance: for it the preset is "custom".
ENDPOINT_DEFAULTS = {key: [page.preset_for_short_calls(component, fn) for component in fn.inputs]
                     for fn_index, fn in demo.fns.items() if fn.api_name in ("animate", "extract_poses", "estimate")
                     for key in (fn_index, fn.api_name)}

if __name__ == "__main__":
    # A bounded queue (more waiting requests are refused with "Queue is full"), one event of each kind at a time
    # unless said otherwise (the GPU work: CONFIG.concurrency). Only the examples are served from disk besides what
    # the handlers return (copied into Gradio's cache); uploads beyond the file-size limit are refused by Gradio;
    # show_error=False: an unexpected error reaches the client without its text (handlers turn every expected one
    # into a gr.Error with a message, see steadydancer_space/errors.py).
    # On SIGTERM (a Space restarting, `kill`) shut down as on Ctrl+C, so Gradio deletes the files it tracks and this
    # process's own output and tiny-model directories go too.
    def stop(signum, frame):  # running generations end after their current step instead of holding the exit
        SERVICE.cancels.cancel_all()
        if GENERATOR.cluster is not None:
            GENERATOR.cluster.stop_workers()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    atexit.register(shutil.rmtree, SERVICE.workspaces.root, ignore_errors=True)
    demo.queue(max_size=CONFIG.queue_size, default_concurrency_limit=1).launch(
        allowed_paths=[EXAMPLES_DIR], show_error=False, css=CSS, head=HEAD, max_file_size=CONFIG.limits.max_file_bytes,
        app_kwargs={"middleware": [Middleware(CancelListener, on_cancel=cancel_job),
                                   Middleware(MissingArgumentDefaults, defaults=ENDPOINT_DEFAULTS.get)]})
