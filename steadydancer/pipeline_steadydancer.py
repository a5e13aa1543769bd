"""SteadyDancerPipeline: reference image + pose frames + prompt -> video, with decoupled-condition guidance."""

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
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

from .defaults import DEFAULT_NEGATIVE_PROMPT, OUTPUT_FPS, RELEASED
from .models import PoseFeatures, SteadyDancerTransformer3DModel
from .scheduling import pose_guidance_steps, set_released_timesteps
from .sizing import (
    DEFAULT_MAX_AREA,
    SIZE_MULTIPLE,
    generation_size,
    is_valid_frame_count,
    latent_frame_count,
    nearest_valid_frame_count,
)

ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor
VideoInput = list[PIL.Image.Image] | np.ndarray | torch.Tensor


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


@dataclass
class SteadyDancerPipelineOutput(BaseOutput):
    """frames: a list (batch) of PIL frame lists, an array (B, F, H, W, 3), a tensor, or latents; fps: playback rate."""

    frames: Any
    fps: int = OUTPUT_FPS


def _to_pixel_tensor(image: ImageInput) -> torch.Tensor:
    """An RGB image as a float tensor (3, H, W) in [-1, 1]."""
    if isinstance(image, PIL.Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"Expected an RGB image array (H, W, 3), got shape {image.shape}.")
        tensor = torch.tensor(image).permute(2, 0, 1).float()  # a copy: uploads may be read-only arrays
        return tensor / 127.5 - 1.0 if image.dtype == np.uint8 else tensor * 2.0 - 1.0
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"Expected an image tensor (3, H, W) in [-1, 1], got shape {tuple(image.shape)}.")
        return image.float()
    raise TypeError(f"Unsupported image type {type(image).__name__}.")


def _frames(video: VideoInput) -> list[ImageInput]:
    if isinstance(video, (np.ndarray, torch.Tensor)) and video.ndim == 4:
        return list(video)
    if isinstance(video, (list, tuple)):
        return list(video)
    raise TypeError("Pose videos must be a list of images or an array/tensor of frames (N, H, W, 3).")


class SteadyDancerPipeline(DiffusionPipeline, WanLoraLoaderMixin):
    r"""
    Human image animation with SteadyDancer: the reference image is kept as the exact first frame and animated
    with the motion of rendered pose frames.

    Components:
        tokenizer, text_encoder: UMT5-XXL (prompt -> up to 512 x 4096 embeddings).
        image_encoder, image_processor: open-CLIP ViT-H/14 vision tower (penultimate hidden states, 257 x 1280).
        transformer: `SteadyDancerTransformer3DModel`.
        vae: `AutoencoderKLWan`.
        scheduler: `UniPCMultistepScheduler` in flow mode, fed the released sigma schedule.
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->transformer->vae"
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        text_encoder: UMT5EncoderModel,
        image_encoder: CLIPVisionModel,
        image_processor: CLIPImageProcessor,
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
        self.vae_scale_factor_spatial = self.vae.config.scale_factor_spatial if getattr(self, "vae", None) else 8
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_scale_factor_spatial)
        self._interrupt = False

    # ---------------------------------------------------------------- assembly
    @classmethod
    def from_hub(cls, **kwargs) -> "SteadyDancerPipeline":
        """Assembles the pipeline from the Hub or local directories; see `steadydancer.assembly.load_pipeline`."""
        from .assembly import load_pipeline

        return load_pipeline(**kwargs)

    # ---------------------------------------------------------------- encoders
    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def interrupt_generation(self) -> None:
        """Asks a running `__call__` to stop after the current step (it returns what it has)."""
        self._interrupt = True

    def encode_prompt(
        self,
        prompt: str | list[str],
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        max_sequence_length: int = 512,
    ) -> torch.Tensor:
        """UMT5 embeddings (B, max_sequence_length, 4096), zero beyond each prompt's tokens (as released)."""
        device = device or self._execution_device
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        tokens = self.tokenizer(
            [p.strip() for p in prompts],
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
        return embeds.to(dtype=dtype or self.transformer.dtype)

    def encode_image(self, images: list[ImageInput], device: torch.device | None = None) -> torch.Tensor:
        """CLIP tokens (B, 257, 1280) from the penultimate layer. Like the released code, each image is resized
        whole to the encoder's input size (no centre crop)."""
        device = device or self._execution_device
        size = self.image_processor.crop_size or self.image_processor.size
        height = size.get("height", size.get("shortest_edge"))
        width = size.get("width", size.get("shortest_edge"))
        pixels = [((_to_pixel_tensor(im) + 1.0) * 127.5).clamp(0, 255).round().byte().permute(1, 2, 0).numpy() for im in images]
        inputs = self.image_processor(
            images=pixels,
            size={"height": height, "width": width},
            do_center_crop=False,
            return_tensors="pt",
        ).to(device=device, dtype=self.image_encoder.dtype)
        hidden = self.image_encoder(**inputs, output_hidden_states=True).hidden_states[-2]
        return hidden.to(self.transformer.dtype)

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

    def _resize(self, images: list[ImageInput], height: int, width: int) -> torch.Tensor:
        # Bicubic resize of [-1, 1] pixels, as released: (3, N, H, W)
        frames = torch.stack([_to_pixel_tensor(im) for im in images]) if images else torch.empty(0)
        return F.interpolate(frames, size=(height, width), mode="bicubic", align_corners=False).transpose(0, 1)

    def prepare_conditions(
        self,
        image: ImageInput,
        pose_video: VideoInput,
        negative_pose_video: VideoInput | None,
        height: int,
        width: int,
        num_frames: int,
    ) -> SteadyDancerConditions:
        """VAE-encodes the reference and the pose videos into `SteadyDancerConditions` (batch of one)."""
        reference = self._resize([image], height, width)  # (3, 1, H, W)
        first_frames = torch.cat([reference, reference.new_zeros(3, num_frames - 1, height, width)], dim=1)
        pose = self._resize(_frames(pose_video)[:num_frames], height, width)
        videos = [first_frames, pose]
        if negative_pose_video is not None:
            videos.append(self._resize(_frames(negative_pose_video)[:num_frames], height, width))
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
    ) -> None:
        """Raises `ValueError` naming the problem; called before any heavy work."""
        if num_frames is not None and not is_valid_frame_count(num_frames):
            raise ValueError(f"num_frames must be 4n+1 (1, 5, 9, ..., 81), got {num_frames}.")
        if num_frames is not None and num_pose_frames is not None and num_pose_frames < num_frames:
            raise ValueError(f"{num_frames} frames asked for but only {num_pose_frames} pose frames given.")
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

    # ---------------------------------------------------------------- sampling
    def _predict(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text: list[torch.Tensor],
        pose: list[PoseFeatures],
        image_embeds: torch.Tensor,
        pose_image_embeds: torch.Tensor,
        conditions: SteadyDancerConditions,
        batched: bool,
        attention_kwargs: dict | None,
    ) -> list[torch.Tensor]:
        """Velocity for each (text, pose) pair; batched into one transformer call when `batched`."""
        dtype = self.transformer.dtype
        passes = len(text)

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

        if batched and passes > 1:
            text_embeds = torch.cat([self.transformer.pad_text(t.to(dtype)) for t in text])
            features = PoseFeatures(*(torch.cat([getattr(p, f) for p in pose]) for f in ("temporal", "spatial", "fused", "aligned")))
            return list(call(passes, text_embeds, features).chunk(passes))
        return [call(1, t.to(dtype), p) for t, p in zip(text, pose)]

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
                pose = self.transformer.encode_pose(model_latents, conditions.pose_latents)
                text, poses = [prompt_embeds], [pose]
                if use_text_guidance:
                    text.append(negative_prompt_embeds)
                    poses.append(pose)
                pose_step = use_pose_guidance and in_window[i]
                if pose_step:
                    text.append(prompt_embeds)
                    poses.append(self.transformer.encode_pose(model_latents, conditions.negative_pose_latents))
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
                latents = scheduler.step(velocity, t, latents, return_dict=False)[0]

                if callback_on_step_end is not None:
                    local = {"latents": latents}
                    outputs = callback_on_step_end(
                        self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs if k in local}
                    )
                    latents = outputs.pop("latents", latents)
                progress.update()
        self._current_timestep = None
        return latents

    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput | None = None,
        pose_video: VideoInput | None = None,
        negative_pose_video: VideoInput | None = None,
        prompt: str | list[str] | None = None,
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        max_area: int = DEFAULT_MAX_AREA,
        num_frames: int | None = None,
        num_inference_steps: int = RELEASED.num_inference_steps,
        guidance_scale: float = RELEASED.guidance_scale,
        pose_guidance_scale: float = RELEASED.pose_guidance_scale,
        pose_guidance_window: tuple[float, float] = RELEASED.pose_guidance_window,
        shift: float = RELEASED.shift,
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
            image: the reference photo (PIL, uint8 array HxWx3, or tensor 3xHxW in [-1, 1]); becomes frame 0.
            pose_video: rendered pose frames (at least `num_frames`), e.g. from `steadydancer.pose.prepare_poses`.
            negative_pose_video: perturbed pose frames for the pose guidance; required when pose_guidance_scale > 0.
            prompt, negative_prompt: text; the released negative prompt is used when `negative_prompt` is None.
            height, width: generation size (multiples of 16); by default from `max_area` and the image's aspect.
            num_frames: 4n+1 frames (default: as many as the pose video allows).
            num_inference_steps, guidance_scale (text), pose_guidance_scale, pose_guidance_window (start, end),
                shift: the sampler's settings (defaults: `steadydancer.defaults.RELEASED`; shift 3.0 suits 480p).
            generator, latents: the starting noise (B, 16, F, h, w) or the generator drawing it.
            prompt_embeds, negative_prompt_embeds, image_embeds, pose_image_embeds, conditions: precomputed inputs;
                with all of them the encoders are not needed.
            batch_guidance: run the guidance passes of a step as one batched transformer call.
            output_type: "pil", "np", "pt" or "latent".
            callback_on_step_end: called as `callback(pipe, step, timestep, {"latents": ...})` after each step.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        self._interrupt = False
        device = self._execution_device

        # 1. Sizes and checks, before any heavy work
        if conditions is not None:
            lat_frames, lat_h, lat_w = conditions.pose_latents.shape[2:]
            height, width = lat_h * self.vae_scale_factor_spatial, lat_w * self.vae_scale_factor_spatial
            num_frames = (lat_frames - 1) * 4 + 1
            num_pose_frames = None
        else:
            if image is None or pose_video is None:
                raise ValueError("Pass `image` and `pose_video`, or precomputed `conditions`.")
            num_pose_frames = len(_frames(pose_video))
            if num_frames is None:
                num_frames = nearest_valid_frame_count(num_pose_frames)
            if height is None or width is None:
                ref_h, ref_w = _to_pixel_tensor(image).shape[1:]
                height, width = generation_size(ref_h, ref_w, max_area)
        has_negative_pose = negative_pose_video is not None or (conditions is not None and conditions.negative_pose_latents is not None)
        self.check_inputs(
            height=height, width=width, num_frames=num_frames, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, pose_guidance_scale=pose_guidance_scale,
            pose_guidance_window=pose_guidance_window, shift=shift, has_negative_pose=has_negative_pose,
            num_pose_frames=num_pose_frames,
        )
        if negative_pose_video is not None and len(_frames(negative_pose_video)) < num_frames:
            raise ValueError(f"{num_frames} frames asked for but only {len(_frames(negative_pose_video))} negative pose frames given.")
        if prompt_embeds is None and prompt is None:
            prompt = ""

        # 2. Encoders (skipped for whatever was given precomputed)
        if prompt_embeds is None:
            prompt_embeds = self.encode_prompt(prompt, device, max_sequence_length=max_sequence_length)
        if negative_prompt_embeds is None and guidance_scale != 1.0:
            negative = DEFAULT_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt
            negative_prompt_embeds = self.encode_prompt(negative, device, max_sequence_length=max_sequence_length)
        if image_embeds is None:
            image_embeds = self.encode_image([image], device)
        if pose_image_embeds is None:
            pose_image_embeds = self.encode_image([_frames(pose_video)[0]], device)
        if conditions is None:
            conditions = self.prepare_conditions(image, pose_video, negative_pose_video, height, width, num_frames)
        conditions = SteadyDancerConditions(
            *(t.to(device) if t is not None else None for t in conditions.__dict__.values())
        )

        # 3. Noise
        shape = (1, self.transformer.config.in_channels, latent_frame_count(num_frames), height // 8, width // 8)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}.")

        # 4. Denoising
        latents = self.denoise(
            latents.to(device), conditions, prompt_embeds, negative_prompt_embeds, image_embeds, pose_image_embeds,
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
            decoded = self.vae.decode(self._normalize_latents(latents, inverse=True).to(self.vae.dtype), return_dict=False)[0]
            video = self.video_processor.postprocess_video(decoded.float(), output_type=output_type)
        self.maybe_free_model_hooks()

        if not return_dict:
            return (video,)
        return SteadyDancerPipelineOutput(frames=video, fps=OUTPUT_FPS)
