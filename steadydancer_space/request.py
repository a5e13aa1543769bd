"""What a visitor or a script asks for, validated once: API values in, typed request objects out.

Every `/extract_poses`, `/animate` and `/estimate` value passes through `PoseOptions.parse` /
`SamplerOptions.parse` here and nowhere else; an `InputError` names the API parameter. Choices take stable API values
(`"576p"`, `"real_time"`); the UI shows labels for them, and the labels are accepted too (older scripts send them).
"""

from dataclasses import dataclass

import numpy as np

from steadydancer.defaults import FAST, PRESETS, RELEASED, SHIFT_480P, SamplerSettings
from steadydancer.pose.edits import PoseEdits
from steadydancer.pose.errors import PoseError
from steadydancer.sizing import RESOLUTIONS, generation_size, is_valid_frame_count

from .uploads import InputError, Limits

MAX_SEED = 2**31 - 1
DEFAULT_SEED = 42  # the page's seed (and the examples'): what a client sends for a seed it does not give
DEFAULT_PROMPT = "A person dancing, smooth natural motion, the same person and clothes as in the photo, high quality."
DEFAULT_RESOLUTION = "576p"
DEFAULT_SMOOTH_START_FRAMES = 8

# API value -> UI label. Older scripts send the labels, so both are accepted (see `_choice`).
RESOLUTION_LABELS = {"480p": "480p (832x480)", "576p": "576p (1024x576, paper)", "720p": "720p (1280x720)"}
MOTION_LABELS = {"real_time": "Real time (16 fps)", "every_frame": "Every frame (released)"}
# Speed presets (`steadydancer.defaults.PRESETS`) and "custom": the steps and text guidance given, on the base model.
PRESET_LABELS = {"fast": "Fast: 4 steps with the distillation LoRA", "quality": "Quality: the released 40 steps",
                 "custom": "Custom: the steps and guidance below"}
DEFAULT_PRESET = "fast"
FIDELITY_LABELS = {"default": "This Space's defaults", "released": "The released command line, as closely as possible"}


def check_prompt(prompt: str | None, limits: Limits | None = None, what: str = "prompt") -> str:
    limits = limits or Limits()
    if prompt is not None and not isinstance(prompt, str):
        raise InputError(f"The {what} must be text, got {type(prompt).__name__}.")
    prompt = "" if prompt is None else prompt
    if len(prompt) > limits.max_prompt_chars:
        raise InputError(f"The {what} has {len(prompt)} characters; at most {limits.max_prompt_chars} are accepted.")
    if "\x00" in prompt:
        raise InputError(f"The {what} contains a NUL character.")
    return prompt


def check_number(value, name: str, low: float, high: float, integer: bool = False) -> float | int:
    """A finite number within [low, high] (an integer when asked), or `InputError` naming the field."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, bytes)) and not str(value).strip():
        raise InputError(f"{name} must be a number, got {_short(value)}.")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name} must be a number, got {_short(value)}.") from None
    if not np.isfinite(number) or not (low <= number <= high):
        raise InputError(f"{name} must be between {_number(low)} and {_number(high)}, got {_short(value)}.")
    if integer:
        if number != int(number):
            raise InputError(f"{name} must be a whole number, got {_short(value)}.")
        return int(number)
    return number


def check_flag(value, name: str) -> bool:
    """A checkbox value: true/false (or 0/1), or `InputError` naming the field."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise InputError(f"{name} must be true or false, got {_short(value)}.")


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _short(value, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _choice(value, name: str, labels: dict[str, str]) -> str:
    """The stable value of a choice given as its value or as its (old) label."""
    for key, label in labels.items():
        if value in (key, label):
            return key
    raise InputError(f"{name} must be one of {', '.join(map(repr, labels))}, got {value!r}.")


@dataclass(frozen=True)
class NumberField:
    """A numeric API parameter and the range the server accepts (the UI's slider uses the same range)."""

    name: str
    minimum: float
    maximum: float
    integer: bool = False

    def check(self, value) -> float | int:
        return check_number(value, self.name, self.minimum, self.maximum, integer=self.integer)

    @property
    def range(self) -> dict:
        return {"minimum": self.minimum, "maximum": self.maximum}


def number_fields(max_frames: int, limits: Limits) -> dict[str, NumberField]:
    """The numeric API parameters by name, with the ranges of this deployment."""
    fields = [
        NumberField("num_frames", 5, max_frames, integer=True),
        NumberField("smooth_start_frames", 1, 32, integer=True),
        NumberField("guidance_scale", 1.0, 10.0),
        NumberField("pose_guidance_scale", 0.0, 5.0),
        NumberField("window_start", 0.0, 1.0),
        NumberField("window_end", 0.0, 1.0),
        NumberField("steps", 1, limits.max_steps, integer=True),
        NumberField("shift", 1.0, 10.0),
        NumberField("seed", 0, MAX_SEED, integer=True),
    ]
    return {f.name: f for f in fields}


POSE_PARAMETERS = ("resolution", "num_frames", "motion", "align_to_reference", "smooth_start", "smooth_start_frames",
                   "auto_start", "fidelity", "pose_edits")
MAX_POSE_EDITS_CHARS = 500_000  # the editor's JSON of every frame of a long video fits with room
SAMPLER_PARAMETERS = ("prompt", "negative_prompt", "guidance_scale", "pose_guidance_scale", "window_start",
                      "window_end", "steps", "shift", "seed", "randomize_seed", "preset")


class _Given:
    """The API values of one request: each given one checked (`InputError` naming it), each absent one defaulted."""

    def __init__(self, values: dict, known: tuple[str, ...], fields: dict[str, NumberField]):
        unknown = set(values) - set(known)
        if unknown:
            raise TypeError(f"Unknown request parameters: {', '.join(sorted(unknown))}.")
        self.values, self.fields = values, fields

    def number(self, name: str, default):
        return self.fields[name].check(self.values[name]) if name in self.values else default

    def flag(self, name: str, default: bool) -> bool:
        return check_flag(self.values[name], name) if name in self.values else default

    def choice(self, name: str, default: str, labels: dict[str, str]) -> str:
        return _choice(self.values[name], name, labels) if name in self.values else default


@dataclass(frozen=True)
class PoseOptions:
    """How the driving motion is turned into pose frames (everything the pose step depends on besides the files)."""

    resolution: str = DEFAULT_RESOLUTION
    num_frames: int = 81
    real_time: bool = True  # resample the driving video to the output rate; False: every frame (released)
    align: bool = True
    smooth_start_frames: int = 0
    auto_start: bool = False
    fidelity: str = "default"  # "released": the released CLI's pose choices and guidance (`steadydancer.fidelity`)
    edits: PoseEdits = PoseEdits()  # joints moved on the photo or on frames, retargeting, smoothing

    @property
    def area(self) -> int:
        """The pixel budget the visitor chose (the Space may generate at a capped one in tiny mode)."""
        return RESOLUTIONS[self.resolution]

    def generation_size(self, reference_height: int, reference_width: int) -> tuple[int, int]:
        return generation_size(reference_height, reference_width, self.area)

    @classmethod
    def parse(cls, fields: dict[str, NumberField], **values) -> "PoseOptions":
        """From API values by name: resolution, num_frames, motion, align_to_reference, smooth_start,
        smooth_start_frames, auto_start. An absent value takes its default; a given one is checked."""
        given = _Given(values, POSE_PARAMETERS, fields)
        default = cls()
        frames = given.number("num_frames", default.num_frames)
        if not is_valid_frame_count(frames):
            raise InputError(f"num_frames must be 4n+1 (5, 9, 13, ..., {int(fields['num_frames'].maximum)}), "
                             f"got {values['num_frames']!r}.")
        smooth = given.number("smooth_start_frames", DEFAULT_SMOOTH_START_FRAMES)
        return cls(
            resolution=given.choice("resolution", default.resolution, RESOLUTION_LABELS),
            num_frames=frames,
            real_time=given.choice("motion", "real_time", MOTION_LABELS) == "real_time",
            align=given.flag("align_to_reference", default.align),
            smooth_start_frames=smooth if given.flag("smooth_start", False) else 0,
            auto_start=given.flag("auto_start", default.auto_start),
            fidelity=given.choice("fidelity", default.fidelity, FIDELITY_LABELS),
            edits=parse_pose_edits(values.get("pose_edits"), frames),
        )


def parse_pose_edits(value, num_frames: int) -> PoseEdits:
    """The `pose_edits` API value (JSON text of one object, or the object; empty: none), every edited frame among
    the `num_frames` output frames. `InputError` names the field."""
    if value is None or value == "":
        return PoseEdits()
    if isinstance(value, str) and len(value) > MAX_POSE_EDITS_CHARS:
        raise InputError(f"pose_edits has {len(value)} characters; at most {MAX_POSE_EDITS_CHARS} are accepted.")
    try:
        edits = PoseEdits.from_json(value) if isinstance(value, str) else PoseEdits.from_dict(value)
        edits.check_frames(num_frames)
    except PoseError as error:
        raise InputError(f"{error}.") from None
    return edits


def _preset_values(preset: str, steps: int, guidance: float) -> tuple[int, float]:
    """`preset`'s steps and text guidance. A client fills a parameter it was not given with the page's default (the
    default preset's value), so a value that is neither that nor the preset's own was given on purpose: refused
    naming the conflict rather than dropped."""
    own, page = PRESETS[preset].settings, PRESETS[DEFAULT_PRESET].settings
    for name, value, preset_value, page_value in (
            ("steps", steps, own.num_inference_steps, page.num_inference_steps),
            ("guidance_scale", guidance, own.guidance_scale, page.guidance_scale)):
        if value not in (preset_value, page_value):
            raise InputError(f"{name}={value:g} contradicts preset '{preset}' ({name} {preset_value:g}): pass "
                             f"preset='custom' to run the steps and guidance_scale given, or leave {name} out.")
    return own.num_inference_steps, own.guidance_scale


@dataclass(frozen=True)
class SamplerOptions:
    """The sampler's settings of one job (defaults: the fast preset, `steadydancer.defaults.FAST`)."""

    prompt: str = DEFAULT_PROMPT
    negative_prompt: str | None = None  # None: the released default negative prompt
    guidance_scale: float = FAST.guidance_scale
    pose_guidance_scale: float = FAST.pose_guidance_scale
    pose_guidance_window: tuple[float, float] = FAST.pose_guidance_window
    num_inference_steps: int = FAST.num_inference_steps
    shift: float = FAST.shift
    seed: int = DEFAULT_SEED
    preset: str = DEFAULT_PRESET  # whose weights run: "fast" the distillation LoRA's, else the released model's

    @property
    def settings(self) -> SamplerSettings:
        """The sampler's settings as the library takes them (the pipeline and `LongVideo`)."""
        return SamplerSettings(num_inference_steps=self.num_inference_steps, guidance_scale=self.guidance_scale,
                               pose_guidance_scale=self.pose_guidance_scale,
                               pose_guidance_window=self.pose_guidance_window, shift=self.shift)

    @property
    def uses_distill_lora(self) -> bool:
        return self.preset != "custom" and PRESETS[self.preset].uses_distill_lora

    @classmethod
    def parse(cls, fields: dict[str, NumberField], limits: Limits, random_seed=None, **values) -> "SamplerOptions":
        """From API values by name: prompt, negative_prompt, guidance_scale, pose_guidance_scale, window_start,
        window_end, steps, shift, seed, randomize_seed. An absent value takes its default; a given one is checked.
        `random_seed`: a callable drawing the seed when `randomize_seed` is true."""
        given = _Given(values, SAMPLER_PARAMETERS, fields)
        default = cls()
        start = given.number("window_start", default.pose_guidance_window[0])
        end = given.number("window_end", default.pose_guidance_window[1])
        if start > end:
            raise InputError(f"pose_guidance_window: window_start ({start:g}) must not be after window_end ({end:g}).")
        randomize = given.flag("randomize_seed", False) and random_seed is not None
        seed = default.seed if randomize and values.get("seed") is None else given.number("seed", default.seed)
        if randomize and seed != default.seed:
            raise InputError(f"seed={seed} was given with randomize_seed on, which draws a new seed: pass "
                             "randomize_seed=False to use it, or leave seed out.")
        preset = given.choice("preset", default.preset, PRESET_LABELS)
        steps = given.number("steps", default.num_inference_steps)
        guidance = given.number("guidance_scale", default.guidance_scale)
        if preset != "custom":  # a preset fixes what it was made for; the sliders count only for "custom"
            steps, guidance = _preset_values(preset, steps, guidance)
        return cls(
            prompt=check_prompt(values.get("prompt"), limits, "prompt").strip() or DEFAULT_PROMPT,
            negative_prompt=check_prompt(values.get("negative_prompt"), limits, "negative prompt").strip() or None,
            guidance_scale=guidance,
            pose_guidance_scale=given.number("pose_guidance_scale", default.pose_guidance_scale),
            pose_guidance_window=(start, end),
            num_inference_steps=steps,
            shift=given.number("shift", default.shift),
            seed=random_seed() if randomize else seed,
            preset=preset,
        )


@dataclass(frozen=True)
class AnimationRequest:
    """One job: the uploaded files (server paths, checked from their content by the pose step), the pose options
    and the sampler options."""

    reference: str | None
    driving_video: str | None = None
    keypoints: str | None = None  # wins over the video when given
    pose: PoseOptions = PoseOptions()
    sampler: SamplerOptions = SamplerOptions()
    reference_keypoints: str | None = None  # the reference's pose, instead of detecting it on the photo

    def recipe(self) -> dict:
        """The API values (besides the files) that make this job again: `client.predict(reference=...,
        driving_video=..., keypoints=..., **recipe, reference_keypoints=..., api_name="/animate")`."""
        pose, sampler = self.pose, self.sampler
        return {
            "prompt": sampler.prompt, "negative_prompt": sampler.negative_prompt or "",
            "resolution": pose.resolution, "num_frames": pose.num_frames,
            "motion": "real_time" if pose.real_time else "every_frame", "align_to_reference": pose.align,
            "smooth_start": pose.smooth_start_frames > 0,
            "smooth_start_frames": pose.smooth_start_frames or DEFAULT_SMOOTH_START_FRAMES,
            "auto_start": pose.auto_start, "guidance_scale": sampler.guidance_scale,
            "fidelity": pose.fidelity,
            "pose_guidance_scale": sampler.pose_guidance_scale, "window_start": sampler.pose_guidance_window[0],
            "window_end": sampler.pose_guidance_window[1], "steps": sampler.num_inference_steps,
            "shift": sampler.shift, "seed": sampler.seed, "randomize_seed": False, "preset": sampler.preset,
            "pose_edits": pose.edits.to_json(),
        }

    def require_files(self) -> None:
        if not self.reference:
            raise InputError("Add a reference image (a photo of the person to animate).")
        if not self.driving_video and not self.keypoints:
            raise InputError("Add a driving video, or a keypoint JSON file, for the motion.")


def shift_for(resolution: str) -> float:
    """The released advice: shift 3.0 at 832x480, 5.0 at 1024x576 and above."""
    return SHIFT_480P if _choice(resolution, "resolution", RESOLUTION_LABELS) == "480p" else RELEASED.shift
