"""A visitor's results (a `gr.State`: per browser tab, never shared between visitors): each entry keeps its video,
its recipe and the files it was made from, so "Use these settings" fills the form again and "Download all" hands
over one zip (video, side by side, poses, recipe). These run as private events: the API's outputs stay as they are."""

import os
import shutil
import tempfile

import gradio as gr

from .outputs import thumbnail, write_bundle
from .page import publish

MAX_HISTORY = 12
# The form's inputs by API parameter name: the files a job was made from, then its recipe's values.
FILE_FIELDS = ("reference", "driving_video", "keypoints", "reference_keypoints")
RECIPE_FIELDS = ("prompt", "negative_prompt", "resolution", "num_frames", "motion", "align_to_reference",
                 "smooth_start", "smooth_start_frames", "auto_start", "guidance_scale", "fidelity",
                 "pose_guidance_scale", "window_start", "window_end", "steps", "shift", "seed", "randomize_seed",
                 "preset", "pose_edits")
FORM_FIELDS = FILE_FIELDS + RECIPE_FIELDS


def bundle(video: str, side_by_side: str | None, pose_video: str | None, recipe: dict | None) -> str:
    """The zip of one result, in Gradio's cache (swept with the other outputs after the file time-to-live)."""
    folder = tempfile.mkdtemp(prefix="steadydancer-bundle-")
    try:
        name = os.path.splitext(os.path.basename(video))[0] + ".zip"
        path = write_bundle(os.path.join(folder, name), {"result": video, "side_by_side": side_by_side,
                                                         "poses": pose_video}, recipe)
        return publish(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def add(history, files, video, seed, recipe, side_by_side, pose_video):
    """A finished job (`files`: its inputs in `FILE_FIELDS` order) enters the history, newest first; entries whose
    files Gradio's cache has swept are dropped. Returns the history, its gallery, the seed's box (shown) and the result's
    two buttons."""
    history = [entry for entry in history or [] if os.path.exists(entry["video"])]
    zipped = None
    if video:
        zipped = bundle(video, side_by_side, pose_video, recipe)
        history.insert(0, {"video": video, "thumbnail": thumbnail(video), "seed": seed, "recipe": recipe,
                           "files": dict(zip(FILE_FIELDS, files or ())), "bundle": zipped})
    del history[MAX_HISTORY:]
    return (history, [(e["thumbnail"], caption(e)) for e in history], gr.Number(visible=bool(video)),
            gr.Button(interactive=bool(video and recipe)), gr.DownloadButton(value=zipped, interactive=bool(zipped)))


def caption(entry) -> str:
    recipe = entry["recipe"] or {}
    return (f"seed {entry['seed']} · {recipe.get('preset')} · {recipe.get('resolution')} · "
            f"{recipe.get('num_frames')} frames")


def select(history, selected: gr.SelectData):
    """The chosen entry: its video, its recipe, its index and its two buttons."""
    history, index = history or [], selected.index
    entry = history[index] if 0 <= index < len(history) else None
    if entry is None or not os.path.exists(entry["video"]):
        return None, None, None, gr.Button(interactive=False), gr.DownloadButton(value=None, interactive=False)
    return (entry["video"], entry["recipe"], index, gr.Button(interactive=True),
            gr.DownloadButton(value=entry["bundle"], interactive=True))


def form_values(files: dict | None, recipe: dict | None) -> tuple:
    """The form's values (`FORM_FIELDS` order) that make the job of `recipe` from `files` again. A file Gradio's
    cache has swept since is left empty, with a warning saying which."""
    if not recipe:
        return (gr.skip(),) * len(FORM_FIELDS)
    files = files or {}
    missing = [name for name in FILE_FIELDS if files.get(name) and not os.path.exists(files[name])]
    if missing:
        gr.Warning(f"These files are no longer kept, upload them again: {', '.join(missing)}.")
    values = [files.get(name) if files.get(name) and name not in missing else None for name in FILE_FIELDS]
    return (*values, *(recipe.get(name, gr.skip()) for name in RECIPE_FIELDS))


def reuse_result(files, recipe):
    """The result on show: `files` as `add` takes them."""
    return form_values(dict(zip(FILE_FIELDS, files or ())), recipe)


def reuse_entry(history, index):
    entry = (history or [])[index] if index is not None and 0 <= index < len(history or []) else None
    return form_values(entry and entry["files"], entry and entry["recipe"])
