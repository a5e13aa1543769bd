"""`steadydancer.prompt_cache.PromptCache` on the tiny pipeline: hits skip the text encoder, eviction is LRU, and the
pipeline's output is the same with cached embeddings."""

import pytest
import torch

from helpers.inputs import random_video_inputs
from steadydancer.defaults import DEFAULT_NEGATIVE_PROMPT
from steadydancer.prompt_cache import PromptCache

JOB = dict(num_inference_steps=2, pose_guidance_window=(0.0, 1.0), output_type="latent", guidance_scale=5.0)


@pytest.fixture
def pipe(make_tiny_pipe):
    pipe = make_tiny_pipe()
    pipe.encoder_calls = []
    pipe.text_encoder.register_forward_pre_hook(lambda m, args: pipe.encoder_calls.append(args[0].shape[0]))
    return pipe


def test_a_hit_skips_the_text_encoder(pipe):
    cache = PromptCache(pipe, size=4)
    first = cache.embeds("a person dancing")
    assert len(pipe.encoder_calls) == 1 and (cache.hits, cache.misses) == (0, 1)
    again = cache.embeds("  a person dancing ")  # the pipeline strips prompts too
    assert len(pipe.encoder_calls) == 1 and (cache.hits, cache.misses) == (1, 1)
    cache.embeds("a  person\tdancing")  # and folds whitespace (the released cleaning): the same tokens, one entry
    assert len(pipe.encoder_calls) == 1 and len(cache) == 1
    with torch.no_grad():
        assert torch.equal(first, again) and torch.equal(first, pipe.encode_prompt("a person dancing"))
    # The caller's tensor is a copy: changing it leaves the cache as it was.
    again.zero_()
    assert torch.equal(cache.embeds("a person dancing"), first)


def test_the_least_recently_used_prompt_is_evicted(pipe):
    cache = PromptCache(pipe, size=2, keep=())
    cache.embeds("a")
    cache.embeds("b")
    cache.embeds("a")  # a is now the most recent
    cache.embeds("c")  # evicts b
    assert "a" in cache and "c" in cache and "b" not in cache and len(cache) == 2
    calls = len(pipe.encoder_calls)
    cache.embeds("a")
    assert len(pipe.encoder_calls) == calls
    cache.embeds("b")
    assert len(pipe.encoder_calls) == calls + 1


def test_kept_prompts_survive_any_number_of_new_prompts(pipe):
    cache = PromptCache(pipe, size=1)
    cache.warm()
    assert DEFAULT_NEGATIVE_PROMPT in cache and len(pipe.encoder_calls) == 1
    for prompt in ("a", "b", "c"):
        cache.embeds(prompt)
    calls = len(pipe.encoder_calls)
    cache.embeds(DEFAULT_NEGATIVE_PROMPT)
    assert len(pipe.encoder_calls) == calls and len(cache) == 2
    # An empty negative prompt means the released one, as in the pipeline: no new encoding.
    for empty in (None, ""):
        kwargs = cache.pipeline_kwargs("c", empty, guidance_scale=5.0)  # "c": the one recent prompt kept
        assert torch.equal(kwargs["negative_prompt_embeds"], cache.embeds(DEFAULT_NEGATIVE_PROMPT))
    assert len(pipe.encoder_calls) == calls


@pytest.mark.slow
def test_cached_embeddings_give_the_same_video(pipe):
    inputs = random_video_inputs(64, 48, 5)
    expected = pipe(**inputs, **JOB, generator=torch.Generator().manual_seed(0)).frames
    assert len(pipe.encoder_calls) == 2  # prompt and default negative

    cache = PromptCache(pipe)
    prompt = inputs.pop("prompt")
    for _ in range(2):
        calls = len(pipe.encoder_calls)
        kwargs = cache.pipeline_kwargs(prompt, guidance_scale=JOB["guidance_scale"])
        got = pipe(**inputs, **kwargs, **JOB, generator=torch.Generator().manual_seed(0)).frames
        assert torch.equal(got, expected)
    assert len(pipe.encoder_calls) == calls  # the second job encoded nothing
    # Without text guidance no negative embedding is made.
    assert cache.pipeline_kwargs(prompt, guidance_scale=1.0)["negative_prompt_embeds"] is None


def test_embeddings_from_elsewhere_can_be_added(pipe):
    cache = PromptCache(pipe, size=2)
    with torch.no_grad():
        embeds = pipe.encode_prompt("a person dancing")
    calls = len(pipe.encoder_calls)
    cache.add("a person dancing", embeds)
    assert torch.equal(cache.embeds("a person dancing"), embeds) and len(pipe.encoder_calls) == calls
