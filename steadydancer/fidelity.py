"""One switch between this library's defaults and the released command line's behaviour (the fidelity mode).

`FIDELITY_MODES["released"]` reproduces the released CLI as closely as the inputs allow; `FIDELITY_MODES["default"]`
is ours.
Both feed the model through the same released-faithful path (pose-frame resize chain, image-encoder input, prompt
cleaning, noise drawn on the execution device); they differ only in the choices below.

    mode = get_fidelity_mode("released")
    prepared = prepare_poses(reference, video, detector=detector, **mode.pose_kwargs())
    video = pipe(image=reference, **prepared.model_inputs().pipeline_kwargs(), prompt=prompt, seed=seed,
                 **mode.sampler_kwargs(max_area))

| choice | default (ours) | released CLI | why ours |
| --- | --- | --- | --- |
| driving frame rate | resampled to 16 fps | every frame (a 30 fps clip plays 1.9x slower) | motion at its real speed |
| lost person in a frame | nearest found pose held | black frame | a black frame reads as "no one there": flicker |
| alignment ratios | lengths through a missing point ignored | measured on the -1 placeholders | no meaningless ratios |
| clip start | first (or chosen) frame | the align frame | align on any frame without cutting the clip |
| pose frames stored | no (lossless canvases) | JPEG, quality 95 | compression noise is no design choice |
| pose guidance scale | 1.0 (paper, README) | 1.5 (CLI default) | the published setting |

The released code also writes the pose frames to a video before the JPEG files; its settings are not known, so that
step is not reproduced (bench/pose_storage.py measures what it and the JPEG step change).
"""

from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from .defaults import OUTPUT_FPS, RELEASED, RELEASED_CLI, SHIFT_480P, SamplerSettings
from .sizing import RESOLUTIONS

RELEASED_JPEG_QUALITY = 95  # the released frame files' quantisation tables; OpenCV's imwrite default


@dataclass(frozen=True)
class FidelityMode:
    """A named set of choices: the `prepare_poses` options it fixes and the sampler's settings.

    `pose` holds only what the mode decides; merge it over other settings (`{**yours, **mode.pose_kwargs()}`).
    """

    name: str
    pose: Mapping[str, Any]
    sampler: SamplerSettings
    shift_480p: float | None = None  # the shift at the 480p budget (released advice: 3.0), None: `sampler.shift`
    description: str = field(default="", compare=False)

    def pose_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `steadydancer.pose.prepare_poses`."""
        return dict(self.pose)

    def sampler_kwargs(self, max_area: int | None = None) -> dict[str, Any]:
        """Keyword arguments for the pipeline call: steps, both guidance scales, the window and the shift (the
        480p shift when `max_area` is the 480p budget and the mode has one)."""
        kwargs = asdict(self.sampler)
        if self.shift_480p is not None and max_area == RESOLUTIONS["480p"]:
            kwargs["shift"] = self.shift_480p
        return kwargs


DEFAULT_MODE = FidelityMode(
    name="default",
    pose=MappingProxyType(dict(fps=OUTPUT_FPS, hold_lost_frames=True, skip_missing=True, start_at_align_frame=False,
                               jpeg_quality=None)),
    sampler=RELEASED,
    shift_480p=SHIFT_480P,
    description="This library's defaults: motion resampled to 16 fps, lost poses held, robust alignment ratios.",
)
RELEASED_MODE = FidelityMode(
    name="released",
    pose=MappingProxyType(dict(fps=None, hold_lost_frames=False, skip_missing=False, start_at_align_frame=True,
                               jpeg_quality=RELEASED_JPEG_QUALITY, align=True, auto_start=False,
                               smooth_start_frames=0)),
    sampler=RELEASED_CLI,
    shift_480p=SHIFT_480P,
    description="The released command line: every driving frame, lost poses black, released alignment arithmetic, "
                "the clip starting at the align frame, pose frames through JPEG files, pose guidance 1.5.",
)
FIDELITY_MODES: Mapping[str, FidelityMode] = MappingProxyType({p.name: p for p in (DEFAULT_MODE, RELEASED_MODE)})


def get_fidelity_mode(name: str) -> FidelityMode:
    """The fidelity mode called `name` ("default" or "released"); ValueError naming `fidelity` otherwise."""
    try:
        return FIDELITY_MODES[name]
    except (KeyError, TypeError):
        raise ValueError(f"fidelity must be one of {', '.join(FIDELITY_MODES)}, got {name!r}.") from None
