"""A least-recently-used cache of prompt embeddings, so repeated prompts and the default negative prompt cost no
text-encoder time (UMT5-XXL: 5.7B parameters, and in the smaller memory plans streamed from CPU memory per encode).

The pipeline accepts precomputed embeddings, so the cache needs no change to it::

    cache = PromptCache(pipe)
    video = pipe(image=..., pose_video=..., **cache.pipeline_kwargs(prompt, guidance_scale=5.0), guidance_scale=5.0)

Embeddings are kept in CPU memory (4 MB each in bf16: 512 x 4096) and moved to the pipeline's device when asked
for. They depend only on the text encoder, so switching presets (`steadydancer.presets`) keeps them valid.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import torch

from .defaults import DEFAULT_NEGATIVE_PROMPT, negative_or_default


class PromptCache:
    r"""
    Embeddings of the last `size` prompts, plus `keep` prompts held for the cache's lifetime.

    Args:
        pipe: a `SteadyDancerPipeline` (its `encode_prompt` computes the misses).
        size: how many prompts to remember besides the kept ones; the least recently used is evicted first.
        keep: prompts never evicted (default: the released negative prompt, used by every guided job). They are
            encoded on first use, or at once with `warm`.
        max_sequence_length: tokens per prompt, as in the pipeline's `__call__`.
    """

    def __init__(
        self,
        pipe,
        size: int = 16,
        *,
        keep: Iterable[str] = (DEFAULT_NEGATIVE_PROMPT,),
        max_sequence_length: int = 512,
    ):
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}.")
        self.pipe = pipe
        self.size = size
        self.max_sequence_length = max_sequence_length
        self._keep = {self._key(p) for p in keep}
        self._kept: dict[str, torch.Tensor] = {}
        self._recent: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _key(prompt: str) -> str:
        from .pipeline_steadydancer import prompt_clean

        return prompt_clean(prompt)  # what `encode_prompt` tokenizes: prompts that clean alike share an entry

    def __len__(self) -> int:
        return len(self._kept) + len(self._recent)

    def __contains__(self, prompt: str) -> bool:
        key = self._key(prompt)
        return key in self._kept or key in self._recent

    def clear(self) -> None:
        self._kept.clear()
        self._recent.clear()

    # ---------------------------------------------------------------- entries
    def get(self, prompt: str) -> torch.Tensor | None:
        """The cached CPU embeddings (1, L, D) of `prompt`, or None; a hit counts as a use."""
        key = self._key(prompt)
        if key in self._kept:
            return self._kept[key]
        if key in self._recent:
            self._recent.move_to_end(key)
            return self._recent[key]
        return None

    def add(self, prompt: str, embeds: torch.Tensor) -> None:
        """Stores embeddings computed elsewhere (e.g. returned from a ZeroGPU worker, whose own cache is lost)."""
        key = self._key(prompt)
        embeds = embeds.detach().to("cpu")
        if key in self._keep:
            self._kept[key] = embeds
            return
        self._recent[key] = embeds
        self._recent.move_to_end(key)
        while len(self._recent) > self.size:
            self._recent.popitem(last=False)

    def embeds(self, prompt: str, device: str | torch.device | None = None) -> torch.Tensor:
        """Embeddings (1, max_sequence_length, D) of `prompt` on `device` (default: the pipeline's), encoded on a
        miss only. The returned tensor is the caller's: the cached copy stays untouched."""
        cached = self.get(prompt)
        if cached is None:
            self.misses += 1
            with torch.no_grad():  # as inside the pipeline's __call__ (and no autograd graph kept alive)
                cached = self.pipe.encode_prompt(prompt, max_sequence_length=self.max_sequence_length)
            self.add(prompt, cached)
            cached = self.get(prompt)
        else:
            self.hits += 1
        device = torch.device(device) if device is not None else self.pipe._execution_device
        return cached.to(device, copy=True)

    def warm(self, prompts: Iterable[str] | None = None) -> None:
        """Encodes `prompts` now (default: the kept ones), e.g. at start-up inside the GPU call."""
        for prompt in self._keep if prompts is None else prompts:
            if prompt not in self:
                self.embeds(prompt, device="cpu")

    # ---------------------------------------------------------------- for the pipeline
    def pipeline_kwargs(
        self,
        prompt: str,
        negative_prompt: str | None = None,
        *,
        guidance_scale: float,
        device: str | torch.device | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """``prompt_embeds`` and ``negative_prompt_embeds`` for the pipeline's `__call__`.

        The negative embeddings (of `negative_prompt`, or the released one when None or "") are only made when the job
        uses text guidance (`guidance_scale` != 1), as the pipeline itself does.
        """
        negative = None
        if guidance_scale != 1.0:
            negative = self.embeds(negative_or_default(negative_prompt), device)
        return {"prompt_embeds": self.embeds(prompt, device), "negative_prompt_embeds": negative}
