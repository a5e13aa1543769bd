"""The page's glue to Gradio: values in as sent, files out through Gradio's cache, progress, a job streamed with its
previews, and the small helpers of the form (history, sliders, frames and seconds)."""

import asyncio
import contextlib
import os

import gradio as gr

from steadydancer.defaults import OUTPUT_FPS, PRESETS
from steadydancer.sizing import nearest_valid_frame_count

from .estimate import format_seconds
from .outputs import latest_preview
from .request import shift_for

PREVIEW_POLL_SECONDS = 0.5


def _payload_path(payload):
    path = getattr(payload, "path", None)
    if path is None and isinstance(payload, dict):
        path = payload.get("path")
    return path


def pass_through_inputs(components) -> None:
    """Hands each handler the values a request sent: a server path for files (image, video, JSON), the raw value
    for everything else, so validation happens once, in `steadydancer_space.request` and the upload checks, with
    messages naming the API parameter.

    Gradio has no public switch for this, so `preprocess` is replaced on each instance: its own preprocessing checks
    ranges and choices with messages that name no field, lets NaN through, refuses older clients' choice labels,
    opens images before their content is checked and leaves an empty temporary file per `gr.File` request."""

    for component in components:
        if isinstance(component, (gr.Image, gr.Video, gr.File)):

            def as_path(payload):
                if payload is None:
                    return None
                path = _payload_path(payload)
                if not path:
                    raise gr.Error("An uploaded file was not received; upload it again.", print_exception=False)
                return str(path)

            component.preprocess = as_path  # an instance attribute: Gradio calls `block.preprocess(...)`
        else:
            component.preprocess = lambda payload: payload



def publish(path: str | None) -> str | None:
    """Copies an output file into Gradio's upload cache (removed by the app's `delete_cache` schedule) and returns
    the copy, so the request's working directory can be deleted at once. Gradio finds the copy already cached when
    it post-processes the response."""
    if path is None:
        return None
    from gradio import processing_utils
    from gradio.utils import get_upload_folder

    return processing_utils.save_file_to_cache(path, cache_dir=get_upload_folder())


def reporter(progress, clock=None):
    """The service's progress(done, total, description) shown on a Gradio progress bar, with the time left as this
    job's own pace so far says (nothing until one unit of the current stage is done)."""
    if progress is None:
        return None
    import time

    clock = clock or time.monotonic
    # A stage (a new total) starts when the report before it came: its first report arrives after its first unit.
    stage = {"total": None, "start": clock(), "last": clock()}

    def report(done, total, desc):
        unit = "frames" if desc.startswith("Detecting") else "steps"
        now = clock()
        if total != stage["total"]:
            stage.update(total=total, start=now if done == 0 else stage["last"])
        stage["last"] = now
        if total and 0 < done < total:
            desc += f" (about {format_seconds((now - stage['start']) / done * (total - done))} left)"
        progress((done, total) if total else None, desc=desc, unit=unit)

    return report


async def stream_job(run, work: str, interrupt, num_outputs: int):
    """Runs `run()` (returning the outputs) in a worker thread; yields the latest preview written in `work` while it
    runs, as the last of `num_outputs` + 1 values, then the outputs and the preview. When Gradio cancels the handler,
    `interrupt()` stops the job after its current step."""
    task = asyncio.ensure_future(asyncio.to_thread(run))
    shown = preview = None
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=PREVIEW_POLL_SECONDS)
            latest = latest_preview(work)
            if latest and latest != shown:
                with contextlib.suppress(OSError):  # the job may have ended and taken its folder with it
                    preview, shown = publish(latest), latest
                    yield (gr.skip(),) * num_outputs + (preview,)
        yield (*task.result(), preview)
    except asyncio.CancelledError:  # Gradio cancelled the handler (the client went away): the job stops too
        interrupt()
        task.add_done_callback(_retrieve)  # it ends with GenerationCancelled, expected: not logged as unretrieved
        raise


def _retrieve(task) -> None:
    if not task.cancelled():
        task.exception()


def start_job(*files):
    """Before a job: its files kept for its history entry (in `history.FILE_FIELDS` order), the last result cleared (so a
    cancelled or failed job never leaves it looking like the new one, its error badge gone too), the opening picture
    folded away, Cancel enabled and the result's buttons off until the new one is there."""

    return (list(files), gr.Video(value=None), gr.Number(value=None, visible=False), "", None, None, None,
            gr.Image(visible=False),
            gr.Button(interactive=True), gr.Button(interactive=False),
            gr.DownloadButton(value=None, interactive=False))


def job_ended():
    """Cancel is enabled only while a job of this visitor runs."""

    return gr.Button(interactive=False)


def cancelled_note():

    return "**Cancelled.** Nothing was made; change the settings and press Animate again.", gr.Button(interactive=False)


def fill_example(examples_dir: str):
    """The example gallery's select handler: (the example's name, its files, prompt, length, pose edits and the
    pose editor's fit control showing their fit) for the form."""
    from steadydancer.pose.edits import PoseEdits

    from .examples import EXAMPLES, example_files

    def fill(selected: gr.SelectData):
        example = EXAMPLES[selected.index]
        return (example.label, *example_files(example, examples_dir), example.prompt, example.num_frames,
                example.pose_edits, PoseEdits.from_json(example.pose_edits).retarget.fit)

    return fill


def still_there(outputs) -> bool:
    """Whether a job's outputs (as the app returned them) still have their files (Gradio's cache sweeps them)."""
    return bool(outputs) and all(os.path.exists(value) for value in outputs
                                 if isinstance(value, str) and os.path.isabs(value))


def show_motion_source(kind: str):
    """The change handler of one motion input: when it gets a file, the other input is cleared and its tab shown."""

    def show(value):
        if not value:
            return gr.skip(), gr.skip()
        return None, gr.Tabs(selected=kind)

    return show


def preset_sliders(name):
    """A preset's steps and text guidance, shown on the sliders ("custom" leaves them as they are)."""

    if name not in PRESETS:
        return gr.skip(), gr.skip()
    settings = PRESETS[name].settings
    return settings.num_inference_steps, settings.guidance_scale


def frames_to_seconds(num_frames):
    return round(int(num_frames) / OUTPUT_FPS, 2)


def valid_frames(num_frames, min_frames: int, max_frames: int) -> int:
    """The nearest frame count the model takes within [min_frames, max_frames]; a value that is no number: the
    smallest."""
    try:
        frames = float(num_frames)
    except (TypeError, ValueError):
        return min_frames
    if frames != frames:  # NaN
        return min_frames
    frames = nearest_valid_frame_count(int(round(min(max(frames, min_frames), max_frames))) + 2)
    return min(max(frames, min_frames), max_frames)


def seconds_to_frames(seconds, min_frames: int, max_frames: int):
    """Typed seconds -> (frames, the seconds those frames last): both boxes show what will be made."""
    try:
        frames = float(seconds) * OUTPUT_FPS + 1
    except (TypeError, ValueError):
        frames = min_frames
    frames = valid_frames(frames, min_frames, max_frames)
    return frames, frames_to_seconds(frames)


def frames_changed(num_frames, min_frames: int, max_frames: int):
    """Frames -> (the frames corrected when out of range or not a count the model takes, their seconds)."""

    frames = valid_frames(num_frames, min_frames, max_frames)
    return (gr.skip() if frames == num_frames else frames), frames_to_seconds(frames)


def wire_form(demo, ui, private: dict, estimate, frame_range: tuple[int, int], form_fills=()) -> None:
    """The form's own events (inside the page's Blocks): motion tabs, the photo's keypoints, speed and sliders, the
    estimate (`estimate`, the app's /estimate handler, registered here under that name; `form_fills`: events that
    set the whole form, the estimate follows each), the lengths."""
    # One source of motion at a time, shown in its tab: a video replaces a keypoint file and vice versa
    # (examples included), so a file left in the hidden tab never wins unseen.
    ui.driving_video.change(show_motion_source("video"), ui.driving_video, [ui.keypoints, ui.motion_tabs],
                            **private)
    ui.keypoints.change(show_motion_source("keypoints"), ui.keypoints, [ui.driving_video, ui.motion_tabs],
                        **private)
    # Keypoints belong to their photo: a new photo clears them; given ones are shown, never hidden in a closed box.
    ui.reference.upload(lambda: None, None, ui.reference_keypoints, **private)
    ui.reference_keypoints.change(lambda value: gr.Accordion(open=bool(value)), ui.reference_keypoints,
                                  ui.reference_keypoints_box, **private)
    estimate_inputs = [ui.reference, ui.resolution, ui.num_frames, ui.steps, ui.guidance_scale,
                       ui.pose_guidance_scale, ui.window_start, ui.window_end, ui.preset]
    # The speed and its sliders change in pairs (a preset sets the sliders, a slider makes the preset "custom"): the
    # estimate waits for both, or an estimate of the half-changed pair (a contradiction) could arrive last.
    # Instant, so it never waits; registered first, so it owns the API name.
    speed = (ui.preset, ui.steps, ui.guidance_scale)
    gr.on([demo.load] + [c.change for c in estimate_inputs if c not in speed], estimate, estimate_inputs,
          ui.estimate_md, api_name="estimate", concurrency_limit=None, show_progress="hidden")
    ui.preset.input(preset_sliders, ui.preset, [ui.steps, ui.guidance_scale], **private).then(
        estimate, estimate_inputs, ui.estimate_md, **private)
    for slider in (ui.steps, ui.guidance_scale):
        slider.input(lambda: "custom", None, ui.preset, **private).then(estimate, estimate_inputs,
                                                                         ui.estimate_md, **private)
    for event in form_fills:
        event.then(estimate, estimate_inputs, ui.estimate_md, **private)
    # Frames and seconds show the same length; typed values are corrected to one the model can make.
    ui.num_frames.change(lambda frames: frames_changed(frames, *frame_range), ui.num_frames,
                         [ui.num_frames, ui.seconds], **private)
    gr.on([ui.seconds.submit, ui.seconds.blur], lambda seconds: seconds_to_frames(seconds, *frame_range),
          ui.seconds, [ui.num_frames, ui.seconds], **private)
    ui.resolution.input(shift_for, ui.resolution, ui.shift, **private)
    ui.seed.input(lambda: False, None, ui.randomize_seed, **private)  # a seed typed is a seed meant


def preset_for_short_calls(component, fn):
    """The value a raw call too short to send `component` gets: the page's, but "custom" for the speed preset of
    /animate (such a call predates presets and its steps and guidance are meant as given)."""
    is_preset = getattr(component, "elem_id", None) == "speed" and fn.api_name == "animate"
    return "custom" if is_preset else component.value
