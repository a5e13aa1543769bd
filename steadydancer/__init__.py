"""SteadyDancer: animate one photo of a person with the motion of a driving video.

The public names below load on first use, so `import steadydancer.pose` (numpy and OpenCV) does not pull in torch,
diffusers and transformers.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "acceleration": ["apply_fast_paths", "best_attention_backend"],
    "assembly": ["load_pipeline", "load_transformer"],
    "defaults": ["DEFAULT_NEGATIVE_PROMPT", "FAST", "OUTPUT_FPS", "RELEASED", "SamplerSettings"],
    "loading": ["load_released_transformer", "save_released_layout"],
    "long_video": ["LongVideo", "generate_long_video"],
    "lora": ["load_wan_lora", "unload_wan_lora"],
    "models": ["SteadyDancerTransformer3DModel"],
    "pipeline_steadydancer": ["SteadyDancerConditions", "SteadyDancerPipeline", "SteadyDancerPipelineOutput"],
    "presets": ["PresetSwitch"],
    "pose": [
        "DWPoseDetector", "Pose", "PoseDetection", "PoseSequence", "PreparedPoses", "SyntheticPoseDetector",
        "prepare_poses",
    ],
    "sizing": ["generation_size"],
    "video_io": ["write_mp4"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from .acceleration import apply_fast_paths, best_attention_backend
    from .assembly import load_pipeline, load_transformer
    from .defaults import DEFAULT_NEGATIVE_PROMPT, FAST, OUTPUT_FPS, RELEASED, SamplerSettings
    from .loading import load_released_transformer, save_released_layout
    from .long_video import LongVideo, generate_long_video
    from .lora import load_wan_lora, unload_wan_lora
    from .models import SteadyDancerTransformer3DModel
    from .pipeline_steadydancer import SteadyDancerConditions, SteadyDancerPipeline, SteadyDancerPipelineOutput
    from .pose import (
        DWPoseDetector,
        Pose,
        PoseDetection,
        PoseSequence,
        PreparedPoses,
        SyntheticPoseDetector,
        prepare_poses,
    )
    from .presets import PresetSwitch
    from .sizing import generation_size
    from .video_io import write_mp4
