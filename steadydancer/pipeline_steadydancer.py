"""SteadyDancerPipeline: reference image + pose frames + prompt -> video, with decoupled-condition guidance.

Everything that feeds the transformer follows the released `generate` (see `steadydancer.pixels` for the pixel
chain, `prompt_clean` for the text, `prepare_latents` for the noise).
"""

import functools
import html
import re
from dataclasses import dataclass, fields
from typing import Any, Callable

import numpy as np
import torch
from diffusers import AutoencoderKLWan, DiffusionPipeline, UniPCMultistepScheduler
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.loaders import WanLoraLoaderMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor
from transformers import CLIPVisionModel, PreTrainedTokenizerBase, UMT5EncoderModel

try:  # transformers 5 maps CLIPImageProcessor to a torchvision backend; the PIL one needs no torchvision.
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:
    from transformers import CLIPImageProcessor

from .defaults import DEFAULT_NEGATIVE_PROMPT, OUTPUT_FPS, RELEASED, negative_or_default
from .models import PoseFeatures, SteadyDancerTransformer3DModel
from .parallel import PipelineParallel
from .pixels import (
    ImageInput,
    check_image,
    frames_of,
    image_encoder_pixels,
    image_size,
    pose_video_pixels,
    resize,
    stored_frame_pixels,
    to_pixels,
)
from .scheduling import pose_guidance_steps, set_released_timesteps
from .sizing import (
    DEFAULT_MAX_AREA,
    SIZE_MULTIPLE,
    VAE_SPATIAL_STRIDE,
    VAE_TEMPORAL_STRIDE,
    check_enough_frames,
    check_frame_count,
    generation_size,
    nearest_valid_frame_count,
)

__all__ = ["DEFAULT_NEGATIVE_PROMPT", "SteadyDancerConditions", "SteadyDancerPipeline", "SteadyDancerPipelineOutput",
           "prompt_clean"]

VideoInput = list[ImageInput] | np.ndarray | torch.Tensor
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def prompt_clean(text: str) -> str:
    """The released text encoder's cleaning, applied to every prompt before tokenising: ftfy's `fix_text` (mojibake,
    and NFC/width fixes: full-width commas become ASCII ones), HTML entities unescaped twice, runs of whitespace
    folded to one space, ends stripped."""
    try:
        import ftfy
    except ImportError:  # a hard requirement: without it some prompts would tokenise differently, silently
        raise ImportError("The released prompt cleaning needs ftfy: pip install ftfy") from None
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


@dataclass
class SteadyDancerConditions:
    """Every latent the transformer needs besides the noise, for a batch of B videos.

    Shapes: image_condition (B, 20, F, h, w); reference_latents (B, 36, 1, h, w); pose_reference_latents
    (B, 16, 1, h, w); pose_latents and negative_pose_latents (B, 16, F, h, w); F latent frames, h x w latent grid.
    """

    image_condition: torch.Tensor
    reference_latents: torch.Tensor
    pose_reference_latents: torch.Tensor
    pose_latents: torch.Tensor
    negative_pose_latents: torch.Tensor | None = None

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "SteadyDancerConditions":
        """The same conditions with `fn` applied to every tensor."""
        tensors = (getattr(self, f.name) for f in fields(self))
        return SteadyDancerConditions(*(None if t is None else fn(t) for t in tensors))


@dataclass
class SteadyDancerPipelineOutput(BaseOutput):
    """frames: a list (batch) of PIL frame lists, an array (B, F, H, W, 3), a tensor, or latents; fps: playback rate."""

    frames: Any
    fps: int = OUTPUT_FPS


def _batched(tensor: torch.Tensor, batch_size: int, name: str) -> torch.Tensor:
    """`tensor` with batch `batch_size` (a batch of one is broadcast)."""
    if tensor.shape[0] == batch_size:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(batch_size, *tensor.shape[1:])
    raise ValueError(f"{name} has a batch of {tensor.shape[0]}; expected 1 or {batch_size} (the number of prompts).")


class SteadyDancerPipeline(DiffusionPipeline, WanLoraLoaderMixin):
    r"""
    Human image animation with SteadyDancer: the reference image is kept as the exact first frame and animated
    with the motion of rendered pose frames.

    Components:
        tokenizer, text_encoder: UMT5-XXL (prompt -> up to 512 x 4096 embeddings). Optional.
        image_encoder, image_processor: open-CLIP ViT-H/14 vision tower (penultimate hidden states, 257 x 1280) and
            the processor giving its input size, mean and std. Optional.
        transformer: `SteadyDancerTransformer3DModel`.
        vae: `AutoencoderKLWan`.
        scheduler: `UniPCMultistepScheduler` in flow mode, fed the released sigma schedule.

    Without the optional components the pipeline runs on precomputed `prompt_embeds`, `negative_prompt_embeds`,
    `image_embeds` and `pose_image_embeds`.

    Pixel ranges, one per input type: PIL images are 8-bit RGB; numpy arrays (H, W, 3) are uint8 in [0, 255] or
    float in [0, 1]; tensors (3, H, W) are float in [-1, 1]. Videos are lists of those, arrays (N, H, W, 3) or
    tensors (N, 3, H, W). 8-bit pose frames (PIL, uint8) are read as the released `generate` reads its stored pose
    frames: resized (PIL bicubic) to the reference image's size, then (torch bicubic, unclamped) to the generation
    size. Float pose frames are pixels already through the first step (`steadydancer.pose.PreparedPoses.model_inputs`
    makes them) and get the second only.
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->transformer->vae"
    _optional_components = ["tokenizer", "text_encoder", "image_encoder", "image_processor"]
    _callback_tensor_inputs = ["latents", "denoised"]

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None,
        text_encoder: UMT5EncoderModel | None,
        image_encoder: CLIPVisionModel | None,
        image_processor: CLIPImageProcessor | None,
        transformer: SteadyDancerTransformer3DModel,
        vae: AutoencoderKLWan,
        scheduler: UniPCMultistepScheduler,
    ):
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            image_encoder=image_encoder,
            image_processor=image_processor,
            transformer=transformer,
            vae=vae,
            scheduler=scheduler,
        )
        vae_config = self.vae.config if getattr(self, "vae", None) is not None else None
        self.vae_scale_factor_spatial = vae_config.scale_factor_spatial if vae_config else VAE_SPATIAL_STRIDE
        self.vae_scale_factor_temporal = vae_config.scale_factor_temporal if vae_config else VAE_TEMPORAL_STRIDE
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_scale_factor_spatial)
        self._interrupt = False
        self.parallel: PipelineParallel | None = None  # the other ranks of a job that several run together

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def interrupt_generation(self) -> None:
        """Asks a running `__call__` to stop after the current step (it returns what it has)."""
        self._interrupt = True

    def on_one_rank(self, compute: Callable[[], Any]) -> Any:
        """`compute()`; when several ranks run the job (`parallel`), on one of them only, its result shared."""
        return compute() if self.parallel is None else self.parallel.once(compute, self._execution_device)

    @property
    def _model_dtype(self) -> torch.dtype:
        return self.transformer.dtype if getattr(self, "transformer", None) is not None else torch.float32

    def _require(self, names: tuple[str, ...], precomputed: str) -> None:
        missing = [n for n in names if getattr(self, n, None) is None]
        if missing:
            raise ValueError(f"This pipeline has no {' or '.join(missing)}; pass `{precomputed}` instead.")

    # ---------------------------------------------------------------- encoders
    def encode_prompt(
        self,
        prompt: str | list[str],
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        max_sequence_length: int = 512,
    ) -> torch.Tensor:
        """UMT5 embeddings (B, max_sequence_length, 4096) of the cleaned prompts (`prompt_clean`), zero beyond each
        prompt's tokens (as released)."""
        self._require(("tokenizer", "text_encoder"), "prompt_embeds")
        device = device or self._execution_device
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        tokens = self.tokenizer(
            [prompt_clean(p) for p in prompts],
            padding="max_length",
            max_length=max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        mask = tokens.attention_mask.to(device)
        embeds = self.text_encoder(tokens.input_ids.to(device), mask).last_hidden_state
        embeds = embeds * mask[..., None].to(embeds.dtype)
        return embeds.to(dtype=dtype or self._model_dtype)

    def image_encoder_input(self, images: list[ImageInput]) -> torch.Tensor:
        """What the image encoder receives, as released: each image as [-1, 1] pixels at its own size, resized with
        torch bicubic to the encoder's input size (no antialiasing, no centre crop), then CLIP's mean and std.
        Returns (B, 3, S, S)."""
        self._require(("image_processor",), "image_embeds and pose_image_embeds")
        processor = self.image_processor
        size = processor.crop_size or processor.size
        height = size.get("height", size.get("shortest_edge"))
        width = size.get("width", size.get("shortest_edge"))
        pixels = [to_pixels(im) for im in images]
        return image_encoder_pixels(pixels, (height, width), processor.image_mean, processor.image_std)

    def encode_image(self, images: list[ImageInput], device: torch.device | None = None) -> torch.Tensor:
        """CLIP tokens (B, 257, 1280) from the penultimate layer of `image_encoder_input(images)`."""
        self._require(("image_encoder", "image_processor"), "image_embeds and pose_image_embeds")
        device = device or self._execution_device
        pixel_values = self.image_encoder_input(images).to(device=device, dtype=self.image_encoder.dtype)
        hidden = self.image_encoder(pixel_values=pixel_values, output_hidden_states=True).hidden_states[-2]
        return hidden.to(self._model_dtype)

    @staticmethod
    def first_pose_frame(pose_video: VideoInput, image: ImageInput) -> torch.Tensor:
        """The pose image the image encoder sees by default, as released: the first pose frame after the first step of
        the pose-frame chain (8-bit frames resized to the reference image's size), as pixels (3, H, W) in [-1, 1]."""
        return stored_frame_pixels(frames_of(pose_video, "pose_video")[0], image_size(image))

    def _normalize_latents(self, latents: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        config = self.vae.config
        mean = torch.tensor(config.latents_mean, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1, 1)
        std = torch.tensor(config.latents_std, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1, 1)
        return latents * std + mean if inverse else (latents - mean) / std

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """Normalised VAE latents (B, 16, F, h, w) of pixels (B, 3, 4n+1, H, W) in [-1, 1] (the posterior mean)."""
        video = video.to(device=self._execution_device, dtype=self.vae.dtype)
        latents = self.vae.encode(video).latent_dist.mode()
        return self._normalize_latents(latents.float())

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, 4n+1, H, W) in [-1, 1] (float32) of normalised latents (B, 16, n+1, h, w)."""
        latents = self._normalize_latents(latents.float(), inverse=True).to(self.vae.dtype)
        return self.vae.decode(latents, return_dict=False)[0].float()

    def prepare_conditions(
        self,
        image: ImageInput,
        pose_video: VideoInput,
        negative_pose_video: VideoInput | None,
        height: int,
        width: int,
        num_frames: int,
    ) -> SteadyDancerConditions:
        """VAE-encodes the reference and the pose videos into `SteadyDancerConditions` (batch of one).

        The reference is resized with torch bicubic to (height, width); the pose frames go through the released
        chain frame by frame (`steadydancer.pixels.pose_frame_pixels`), so a large reference costs one frame at its
        size at a time, not a video.
        """
        # Counts first: every allocation below is sized by num_frames.
        check_frame_count(num_frames)
        sources = []
        for name, video in (("pose_video", pose_video), ("negative_pose_video", negative_pose_video)):
            if video is not None:
                frames = frames_of(video, name)  # checks every frame, naming the parameter
                check_enough_frames(num_frames, len(frames), name)
                sources.append(video if isinstance(video, torch.Tensor) else frames)  # a prepared tensor: a view
        reference = to_pixels(image)  # (3, H_ref, W_ref)
        reference_size = tuple(reference.shape[-2:])
        reference = resize(reference[None], height, width).transpose(0, 1)  # (3, 1, h, w)
        first_frames = torch.cat([reference, reference.new_zeros(3, num_frames - 1, height, width)], dim=1)
        videos = [first_frames] + [pose_video_pixels(source, num_frames, reference_size, height, width)
                                   for source in sources]
        latents = [self.encode_video(v[None]) for v in videos]

        # The causal VAE encodes the first frame alone, so the first latent frame of each video is the latent of
        # that frame by itself: the reference and first-pose-frame latents come for free.
        image_latent, pose_latents = latents[0], latents[1]
        reference_latent = image_latent[:, :, :1]
        mask = torch.zeros_like(image_latent[:, :4])
        mask[:, :, 0] = 1.0  # the first latent frame is given; it stands for 4 mask frames folded into 4 channels
        ones = torch.ones_like(reference_latent[:, :4])
        return SteadyDancerConditions(
            image_condition=torch.cat([mask, image_latent], dim=1),
            reference_latents=torch.cat([reference_latent, ones, reference_latent], dim=1),
            pose_reference_latents=pose_latents[:, :, :1],
            pose_latents=pose_latents,
            negative_pose_latents=latents[2] if len(latents) > 2 else None,
        )

    def latent_shape(self, batch_size: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        """(B, 16, F, h, w) of a batch of `num_frames`-frame videos at height x width."""
        vae = getattr(self, "vae", None)
        channels = vae.config.z_dim if vae is not None else self.transformer.config.in_channels
        return (batch_size, channels, (num_frames - 1) // self.vae_scale_factor_temporal + 1,
                height // self.vae_scale_factor_spatial, width // self.vae_scale_factor_spatial)

    def prepare_latents(
        self,
        batch_size: int,
        num_frames: int,
        height: int,
        width: int,
        device: torch.device | None = None,
        seed: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The starting noise (B, 16, F, h, w), float32 on `device`.

        `seed` draws it as released: `torch.Generator(device).manual_seed(seed)` on the execution device, so on a GPU
        it is CUDA noise. A `generator` is used as given; a CPU one gives the same noise on any hardware.
        """
        device = torch.device(device or self._execution_device)
        shape = self.latent_shape(batch_size, num_frames, height, width)
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}.")
            return latents.to(device=device, dtype=torch.float32)
        if seed is not None:
            generator = torch.Generator(device=device).manual_seed(int(seed))
        return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)

    # ---------------------------------------------------------------- checks
    @staticmethod
    def check_inputs(
        *,
        height: int | None,
        width: int | None,
        num_frames: int | None,
        num_inference_steps: int,
        guidance_scale: float,
        pose_guidance_scale: float,
        pose_guidance_window: tuple[float, float],
        shift: float,
        has_negative_pose: bool,
        num_pose_frames: int | None = None,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        seed: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
    ) -> None:
        """Raises `ValueError` naming the parameter; called before any heavy work."""
        if num_frames is not None:
            check_frame_count(num_frames)
        if num_frames is not None and num_pose_frames is not None:
            check_enough_frames(num_frames, num_pose_frames, "pose_video")
        for name, value in (("height", height), ("width", width)):
            if value is not None and (value <= 0 or value % SIZE_MULTIPLE):
                raise ValueError(f"{name} must be a positive multiple of {SIZE_MULTIPLE}, got {value}.")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps}.")
        if guidance_scale < 0 or pose_guidance_scale < 0:
            raise ValueError("Guidance scales must be >= 0.")
        if shift <= 0:
            raise ValueError(f"shift must be > 0, got {shift}.")
        start, end = pose_guidance_window
        if not (0.0 <= start <= end <= 1.0):
            raise ValueError(f"pose_guidance_window must satisfy 0 <= start <= end <= 1, got ({start}, {end}).")
        if pose_guidance_scale > 0 and not has_negative_pose:
            raise ValueError("pose_guidance_scale > 0 needs negative poses (negative_pose_video or conditions).")
        batch_size = None
        if prompt is not None and not isinstance(prompt, str):
            if not isinstance(prompt, (list, tuple)) or not prompt or not all(isinstance(p, str) for p in prompt):
                raise ValueError(f"prompt must be a string or a non-empty list of strings (one video each), "
                                 f"got {prompt!r}.")
            batch_size = len(prompt)
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            if not isinstance(negative_prompt, (list, tuple)) or not all(isinstance(p, str) for p in negative_prompt):
                raise ValueError(f"negative_prompt must be a string or a list of strings, got {negative_prompt!r}.")
            if len(negative_prompt) != (batch_size or 1):
                raise ValueError(f"negative_prompt has {len(negative_prompt)} entries but prompt has "
                                 f"{batch_size or 1}.")
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
                raise ValueError(f"seed must be an integer, got {seed!r}.")
            if generator is not None:
                raise ValueError("Pass either `seed` or `generator`, not both.")
        if isinstance(generator, list) and batch_size is not None and len(generator) not in (1, batch_size):
            raise ValueError(f"generator has {len(generator)} entries but prompt has {batch_size}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}.")

    # ---------------------------------------------------------------- sampling
    def _predict(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text: list[torch.Tensor],
        pose: list[Callable[[], PoseFeatures]],
        image_embeds: torch.Tensor,
        pose_image_embeds: torch.Tensor,
        conditions: SteadyDancerConditions,
        batched: bool,
        attention_kwargs: dict | None,
    ) -> list[torch.Tensor]:
        """Velocity for each (text, pose) pair; batched into one transformer call when `batched`. `pose[i]()` gives
        pass i's pose features, so a rank computes only the pose features of the passes it runs."""
        dtype = self.transformer.dtype

        def call(n: int, text_embeds: torch.Tensor, features: PoseFeatures) -> torch.Tensor:
            def rep(t: torch.Tensor) -> torch.Tensor:
                return t.to(dtype).repeat(n, *([1] * (t.ndim - 1)))

            return self.transformer(
                hidden_states=rep(latents),
                timestep=timestep.repeat(n * latents.shape[0]),
                encoder_hidden_states=text_embeds,
                encoder_hidden_states_image=rep(image_embeds),
                encoder_hidden_states_pose_image=rep(pose_image_embeds),
                image_condition=rep(conditions.image_condition),
                reference_latents=rep(conditions.reference_latents),
                pose_reference_latents=rep(conditions.pose_reference_latents),
                pose_features=features,
                attention_kwargs=attention_kwargs,
                return_dict=False,
            )[0].float()

        def run(indices: list[int]) -> list[torch.Tensor]:
            if batched and len(indices) > 1:
                text_embeds = torch.cat([self.transformer.pad_text(text[i].to(dtype)) for i in indices])
                features = [pose[i]() for i in indices]
                features = PoseFeatures(*(torch.cat([getattr(f, name) for f in features])
                                          for name in ("temporal", "spatial", "fused", "aligned")))
                return list(call(len(indices), text_embeds, features).chunk(len(indices)))
            return [call(1, text[i].to(dtype), pose[i]()) for i in indices]

        if self.parallel is not None:
            return self.parallel.run_passes(len(text), latents.float(), run)
        return run(list(range(len(text))))

    @torch.no_grad()
    def denoise(
        self,
        latents: torch.Tensor,
        conditions: SteadyDancerConditions,
        prompt_embeds: torch.Tensor,
        negative_prompt_embeds: torch.Tensor | None,
        image_embeds: torch.Tensor,
        pose_image_embeds: torch.Tensor,
        num_inference_steps: int = RELEASED.num_inference_steps,
        guidance_scale: float = RELEASED.guidance_scale,
        pose_guidance_scale: float = RELEASED.pose_guidance_scale,
        pose_guidance_window: tuple[float, float] = RELEASED.pose_guidance_window,
        shift: float = RELEASED.shift,
        batch_guidance: bool = True,
        attention_kwargs: dict | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
    ) -> torch.Tensor:
        """The sampling loop on precomputed inputs; returns the final latents (B, 16, F, h, w) in float32.

        At step i of N: v_c = model(text, pose), v_t = model(negative text, pose); inside the window also
        v_p = model(text, negative pose) and v = v_t + w_txt (v_c - v_t) + w_pose (v_c - v_p); otherwise
        v = v_t + w_txt (v_c - v_t). A text scale of 1 skips the negative-text pass (v = v_c [+ pose term]).
        """
        device = latents.device
        scheduler = self.scheduler
        set_released_timesteps(scheduler, num_inference_steps, shift, device)
        in_window = pose_guidance_steps(num_inference_steps, pose_guidance_window)
        use_pose_guidance = pose_guidance_scale > 0 and conditions.negative_pose_latents is not None
        use_text_guidance = guidance_scale != 1.0 and negative_prompt_embeds is not None
        latents = latents.float()
        self._num_timesteps = len(scheduler.timesteps)

        with self.progress_bar(total=num_inference_steps) as progress:
            for i, t in enumerate(scheduler.timesteps):
                if self.interrupt:
                    break
                self._current_timestep = t
                model_latents = latents.to(self.transformer.dtype)
                pose = functools.cache(functools.partial(
                    self.transformer.encode_pose, model_latents, conditions.pose_latents))
                text, poses = [prompt_embeds], [pose]
                if use_text_guidance:
                    text.append(negative_prompt_embeds)
                    poses.append(pose)
                pose_step = use_pose_guidance and in_window[i]
                if pose_step:
                    text.append(prompt_embeds)
                    poses.append(functools.cache(functools.partial(
                        self.transformer.encode_pose, model_latents, conditions.negative_pose_latents)))
                timestep = t.expand(1).to(device)
                preds = self._predict(
                    model_latents, timestep, text, poses, image_embeds, pose_image_embeds, conditions,
                    batch_guidance, attention_kwargs,
                )
                v_cond = preds[0]
                v_base = preds[1] if use_text_guidance else v_cond
                velocity = v_base + guidance_scale * (v_cond - v_base)
                if pose_step:
                    velocity = velocity + pose_guidance_scale * (v_cond - preds[-1])
                local = {}
                if callback_on_step_end is not None and "denoised" in callback_on_step_end_tensor_inputs:
                    # The clean latent this step predicts (flow matching: x0 = x_t - sigma_t v), for previews.
                    local["denoised"] = latents - scheduler.sigmas[i].to(device) * velocity
                latents = scheduler.step(velocity, t, latents, return_dict=False)[0]

                if callback_on_step_end is not None:
                    local["latents"] = latents
                    outputs = callback_on_step_end(
                        self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs if k in local}
                    )
                    latents = outputs.pop("latents", latents)
                progress.update()
        self._current_timestep = None
        return latents

    def _check_call(
        self, *, image, pose_video, negative_pose_video, prompt, negative_prompt, pose_image, height, width, max_area,
        num_frames, num_inference_steps, guidance_scale, pose_guidance_scale, pose_guidance_window, shift, seed,
        generator, latents, prompt_embeds, negative_prompt_embeds, image_embeds, pose_image_embeds, conditions,
        output_type,
    ) -> tuple[int, int, int, int]:
        """`__call__`'s checks, before any heavy work; returns (height, width, num_frames, batch size)."""
        if conditions is not None:
            lat_frames, lat_h, lat_w = conditions.pose_latents.shape[2:]
            height, width = lat_h * self.vae_scale_factor_spatial, lat_w * self.vae_scale_factor_spatial
            num_frames = (lat_frames - 1) * self.vae_scale_factor_temporal + 1
            num_pose_frames = None
        else:
            if image is None or pose_video is None:
                raise ValueError("Pass `image` and `pose_video`, or precomputed `conditions`.")
            check_image(image, "image")
            num_pose_frames = len(frames_of(pose_video, "pose_video"))
            if num_frames is None:
                num_frames = nearest_valid_frame_count(num_pose_frames)
            if height is None or width is None:
                if isinstance(max_area, bool) or not isinstance(max_area, (int, np.integer)) or max_area <= 0:
                    raise ValueError(f"max_area must be a positive number of pixels, got {max_area!r}.")
                height, width = generation_size(*image_size(image), max_area)
        if image_embeds is None:
            if image is None:
                raise ValueError("Pass `image` or precomputed `image_embeds`.")
            check_image(image, "image")
        if pose_image is not None:
            check_image(pose_image, "pose_image")
        elif pose_image_embeds is None and (pose_video is None or image is None):
            raise ValueError("Pass `pose_video` and `image` (or `pose_image`), or precomputed `pose_image_embeds`.")
        has_negative_pose = negative_pose_video is not None or (
            conditions is not None and conditions.negative_pose_latents is not None)
        self.check_inputs(
            height=height, width=width, num_frames=num_frames, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, pose_guidance_scale=pose_guidance_scale,
            pose_guidance_window=pose_guidance_window, shift=shift, has_negative_pose=has_negative_pose,
            num_pose_frames=num_pose_frames, prompt=None if prompt_embeds is not None else prompt,
            negative_prompt=None if negative_prompt_embeds is not None else negative_prompt, seed=seed,
            generator=generator, output_type=output_type,
        )
        if conditions is None and negative_pose_video is not None:
            check_enough_frames(num_frames, len(frames_of(negative_pose_video, "negative_pose_video")),
                                "negative_pose_video")
        if prompt_embeds is not None:
            batch_size = prompt_embeds.shape[0]
        else:
            batch_size = 1 if prompt is None or isinstance(prompt, str) else len(prompt)
        for name, tensor in (("negative_prompt_embeds", negative_prompt_embeds), ("image_embeds", image_embeds),
                             ("pose_image_embeds", pose_image_embeds),
                             ("conditions", None if conditions is None else conditions.pose_latents)):
            if tensor is not None:
                _batched(tensor, batch_size, name)
        shape = self.latent_shape(batch_size, num_frames, height, width)
        if latents is not None and tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}.")
        if self.parallel is not None and not self.parallel.source:
            return height, width, num_frames, batch_size  # the source rank encodes, and needs the encoders
        if prompt_embeds is None:
            self._require(("tokenizer", "text_encoder"), "prompt_embeds")
        if negative_prompt_embeds is None and guidance_scale != 1.0:
            self._require(("tokenizer", "text_encoder"), "negative_prompt_embeds")
        if image_embeds is None or pose_image_embeds is None:
            self._require(("image_encoder", "image_processor"), "image_embeds and pose_image_embeds")

        return height, width, num_frames, batch_size

    def _encode_inputs(
        self, *, image, pose_video, negative_pose_video, prompt, negative_prompt, pose_image, height, width, num_frames,
        guidance_scale, batch_size, prompt_embeds, negative_prompt_embeds, image_embeds, pose_image_embeds,
        conditions, max_sequence_length, device,
    ) -> tuple:
        """Encodes what was not given precomputed; returns (prompt_embeds, negative_prompt_embeds, image_embeds,
        pose_image_embeds, conditions), each with batch `batch_size` on `device`."""
        if prompt_embeds is None:
            prompt_embeds = self.encode_prompt("" if prompt is None else prompt, device,
                                               max_sequence_length=max_sequence_length)
        if negative_prompt_embeds is None and guidance_scale != 1.0:
            negatives = negative_prompt if isinstance(negative_prompt, (list, tuple)) else [negative_prompt]
            negatives = [negative_or_default(n) for n in negatives]
            negative_prompt_embeds = self.encode_prompt(negatives, device, max_sequence_length=max_sequence_length)
        if image_embeds is None:
            image_embeds = self.encode_image([image], device)
        if pose_image_embeds is None:
            if pose_image is None:
                pose_image = self.first_pose_frame(pose_video, image)
            pose_image_embeds = self.encode_image([pose_image], device)
        if conditions is None:
            conditions = self.prepare_conditions(image, pose_video, negative_pose_video, height, width, num_frames)
        conditions = conditions.map(lambda t: _batched(t.to(device), batch_size, "conditions"))
        image_embeds = _batched(image_embeds, batch_size, "image_embeds")
        pose_image_embeds = _batched(pose_image_embeds, batch_size, "pose_image_embeds")
        if negative_prompt_embeds is not None:
            negative_prompt_embeds = _batched(negative_prompt_embeds, batch_size, "negative_prompt_embeds")

        return prompt_embeds, negative_prompt_embeds, image_embeds, pose_image_embeds, conditions

    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput | None = None,
        pose_video: VideoInput | None = None,
        negative_pose_video: VideoInput | None = None,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        pose_image: ImageInput | None = None,
        height: int | None = None,
        width: int | None = None,
        max_area: int = DEFAULT_MAX_AREA,
        num_frames: int | None = None,
        num_inference_steps: int = RELEASED.num_inference_steps,
        guidance_scale: float = RELEASED.guidance_scale,
        pose_guidance_scale: float = RELEASED.pose_guidance_scale,
        pose_guidance_window: tuple[float, float] = RELEASED.pose_guidance_window,
        shift: float = RELEASED.shift,
        seed: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        pose_image_embeds: torch.Tensor | None = None,
        conditions: SteadyDancerConditions | None = None,
        batch_guidance: bool = True,
        output_type: str = "pil",
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        max_sequence_length: int = 512,
    ) -> SteadyDancerPipelineOutput | tuple:
        r"""
        Animates `image` with the motion of `pose_video`.

        Args:
            image: the reference photo; becomes frame 0. PIL (8-bit RGB), numpy (H, W, 3) uint8 in [0, 255] or float
                in [0, 1], or tensor (3, H, W) float in [-1, 1].
            pose_video: pose frames (at least `num_frames`): the `pose_video` of
                `steadydancer.pose.PreparedPoses.model_inputs()` (float pixels (N, 3, h, w) in [-1, 1]), or rendered
                8-bit frames (list of PIL / uint8 array (N, H, W, 3)), which are resized as the released `generate`
                reads its stored frames: PIL bicubic to the reference's size, then torch bicubic to (height, width).
            negative_pose_video: perturbed pose frames for the pose guidance, in the same forms; required when
                pose_guidance_scale > 0.
            prompt: text, or a list of texts for a batch of videos (one per prompt, same poses). None: "".
            negative_prompt: text (or one per prompt); None or "" mean the released default negative prompt.
                Every prompt is cleaned as released (`prompt_clean`) before tokenising.
            pose_image: the image the image encoder sees for the pose. Default: the first pose frame after the first
                step of the chain above (at the reference's size for 8-bit frames), as released.
            height, width: generation size (multiples of 16); by default from `max_area` and the image's aspect.
            num_frames: 4n+1 frames (default: as many as the pose video allows).
            num_inference_steps, guidance_scale (text), pose_guidance_scale, pose_guidance_window (start, end),
                shift: the sampler's settings (defaults: `steadydancer.defaults.RELEASED`; shift 3.0 suits 480p).
            seed: draws the starting noise as the released code does, with `torch.Generator(device)` on the execution
                device (CUDA noise on a GPU: the released code's noise for that seed).
            generator: instead of `seed`, the generator(s) drawing the noise. `torch.Generator("cpu").manual_seed(s)`
                gives the same noise, so the same video, on any hardware (not the released GPU noise).
            latents: the starting noise itself (B, 16, F, h, w).
            prompt_embeds, negative_prompt_embeds, image_embeds, pose_image_embeds, conditions: precomputed inputs
                (batch 1 or B); they take precedence over the raw ones, and with all of them the encoders are not
                needed.
            batch_guidance: run the guidance passes of a step as one batched transformer call.
            output_type: "pil", "np", "pt" or "latent".
            callback_on_step_end: called as `callback(pipe, step, timestep, {"latents": ...})` after each step; with
                "denoised" in `callback_on_step_end_tensor_inputs` it also gets the clean latent the step predicted
                (x0 = x_t - sigma_t v), e.g. for `steadydancer.preview.preview_strip`.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        self._interrupt = False
        device = self._execution_device

        # 1. Sizes and checks at the border, before any heavy work
        height, width, num_frames, batch_size = self._check_call(
            image=image, pose_video=pose_video, negative_pose_video=negative_pose_video, prompt=prompt,
            negative_prompt=negative_prompt, pose_image=pose_image, height=height, width=width,
            max_area=max_area, num_frames=num_frames, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, pose_guidance_scale=pose_guidance_scale,
            pose_guidance_window=pose_guidance_window, shift=shift, seed=seed, generator=generator,
            latents=latents, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
            image_embeds=image_embeds, pose_image_embeds=pose_image_embeds, conditions=conditions,
            output_type=output_type)

        # 2. Encoders (skipped for whatever was given precomputed), every input batched to B; with several ranks, on
        # one of them only
        encode = functools.partial(
            self._encode_inputs, image=image, pose_video=pose_video, negative_pose_video=negative_pose_video,
            prompt=prompt, negative_prompt=negative_prompt, pose_image=pose_image, height=height, width=width,
            num_frames=num_frames, guidance_scale=guidance_scale, batch_size=batch_size,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
            image_embeds=image_embeds, pose_image_embeds=pose_image_embeds, conditions=conditions,
            max_sequence_length=max_sequence_length, device=device)
        encoded = self.on_one_rank(encode)
        prompt_embeds, negative_prompt_embeds, image_embeds, pose_image_embeds, conditions = encoded

        # 3. Noise: (B, 16, F, h, w)
        latents = self.prepare_latents(batch_size, num_frames, height, width, device, seed=seed, generator=generator,
                                       latents=latents)

        # 4. Denoising
        latents = self.denoise(
            latents, conditions, prompt_embeds, negative_prompt_embeds, image_embeds, pose_image_embeds,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            pose_guidance_scale=pose_guidance_scale, pose_guidance_window=pose_guidance_window, shift=shift,
            batch_guidance=batch_guidance, attention_kwargs=attention_kwargs,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )

        # 5. Decode
        if output_type == "latent":
            video = latents
        else:
            video = self.video_processor.postprocess_video(self.decode_latents(latents), output_type=output_type)
        self.maybe_free_model_hooks()

        if not return_dict:
            return (video,)
        return SteadyDancerPipelineOutput(frames=video, fps=OUTPUT_FPS)
