"""Offloading hooks move every weight before it is used, for each memory plan and for model CPU offload.

On a CPU the offload and onload devices are the same, so a module that runs while its group is "offloaded" still
computes correctly and no device mismatch shows it. Here offloading is made real: an offloaded weight is swapped for
a meta tensor (its values kept aside) and swapped back on onload, through the same hook calls a GPU run makes; a
dispatch mode fails the first operator that mixes such a meta weight with real tensors, naming the module that ran.
"""

from contextlib import contextmanager

import pytest
import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from steadydancer.memory import apply_memory_plan, plan_memory

from helpers.inputs import random_video_inputs

HEIGHT, WIDTH, FRAMES = 32, 48, 5
JOB = dict(num_inference_steps=2, pose_guidance_window=(0.0, 1.0), output_type="latent")
HOPPER, AMPERE = (9, 0), (8, 0)


class MetaOffload:
    """Offloads tensors to the meta device (their values kept here) and brings them back."""

    def __init__(self):
        self.kept: dict[int, torch.Tensor] = {}

    def offload(self, tensors):
        for tensor in tensors:
            if not tensor.is_meta:
                meta = torch.empty_like(tensor, device="meta")
                if isinstance(tensor, torch.nn.Parameter):
                    meta = torch.nn.Parameter(meta, requires_grad=tensor.requires_grad)
                torch.utils.swap_tensors(tensor, meta)  # `tensor` is now the meta one, `meta` holds the values
                self.kept[id(tensor)] = meta

    def onload(self, tensors):
        for tensor in tensors:
            if id(tensor) in self.kept:
                torch.utils.swap_tensors(tensor, self.kept.pop(id(tensor)))


def _module_tensors(modules):
    for module in modules:
        yield from module.parameters()
        yield from module.buffers()


def _group_tensors(group):
    yield from _module_tensors(group.modules)
    yield from group.parameters
    yield from group.buffers


@contextmanager
def meta_offloading(monkeypatch):
    """diffusers' group offloading and accelerate's CPU offload hooks, offloading to the meta device."""
    from accelerate.hooks import CpuOffload
    from diffusers.hooks.group_offloading import ModuleGroup

    store = MetaOffload()
    monkeypatch.setattr(ModuleGroup, "offload_", lambda group: store.offload(_group_tensors(group)))
    monkeypatch.setattr(ModuleGroup, "onload_", lambda group: store.onload(_group_tensors(group)))

    def init_hook(hook, module):
        store.offload(_module_tensors([module]))
        return module

    def pre_forward(hook, module, *args, **kwargs):
        if hook.prev_module_hook is not None:
            hook.prev_module_hook.offload()
        store.onload(_module_tensors([module]))
        return args, kwargs

    def detach_hook(hook, module):
        store.onload(_module_tensors([module]))
        return module

    monkeypatch.setattr(CpuOffload, "init_hook", init_hook)
    monkeypatch.setattr(CpuOffload, "pre_forward", pre_forward)
    monkeypatch.setattr(CpuOffload, "detach_hook", detach_hook)
    yield store


class WeightsInPlace(TorchDispatchMode):
    """Fails the first operator that computes with an offloaded (meta) weight next to real tensors, naming the
    innermost module running."""

    def __init__(self, names: dict[int, str]):
        super().__init__()
        self.names = names
        self.running: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        tensors = [x for x in pytree.tree_leaves((args, kwargs or {})) if isinstance(x, torch.Tensor)]
        devices = {x.device.type for x in tensors}
        if "meta" in devices and len(devices) > 1:
            module = self.running[-1] if self.running else "<no module>"
            raise AssertionError(f"{module} computed {func} before its weights were onloaded")
        return func(*args, **(kwargs or {}))

    @contextmanager
    def tracking_modules(self):
        def push(module, args):
            self.running.append(self.names.get(id(module), type(module).__name__))

        def pop(module, args, output):
            self.running.pop()

        handles = [torch.nn.modules.module.register_module_forward_pre_hook(push),
                   torch.nn.modules.module.register_module_forward_hook(pop)]
        try:
            with self:
                yield
        finally:
            for handle in handles:
                handle.remove()


def module_names(pipe) -> dict[int, str]:
    names = {}
    for component in ("transformer", "text_encoder", "image_encoder", "vae"):
        for name, module in getattr(pipe, component).named_modules():
            names.setdefault(id(module), f"{component}.{name}" if name else component)
    return names


@pytest.fixture(scope="module")
def inputs():
    return random_video_inputs(HEIGHT, WIDTH, FRAMES)


@pytest.fixture(scope="module")
def reference(make_tiny_pipe, inputs):
    return make_tiny_pipe()(**inputs, **JOB, generator=torch.Generator().manual_seed(0)).frames


def run_checked(pipe, inputs, batch_guidance):
    with torch.no_grad(), WeightsInPlace(module_names(pipe)).tracking_modules():
        return pipe(**inputs, **JOB, batch_guidance=batch_guidance, generator=torch.Generator().manual_seed(0)).frames


@pytest.mark.parametrize("batch_guidance", [True, False], ids=["batched", "pass-by-pass"])
@pytest.mark.parametrize("memory_gb, capability, plan_name", [
    (141, HOPPER, "resident"), (48, AMPERE, "fp8"), (24, HOPPER, "offload"),
])
def test_each_plan_onloads_every_weight_before_it_computes(make_tiny_pipe, inputs, reference, monkeypatch,
                                                            memory_gb, capability, plan_name, batch_guidance):
    pipe = make_tiny_pipe()
    with meta_offloading(monkeypatch) as store:
        plan = plan_memory(memory_gb, capability, force=plan_name)
        apply_memory_plan(pipe, plan, device="cpu", use_stream=False)
        assert plan.name == plan_name
        got = run_checked(pipe, inputs, batch_guidance)
    offloaded = plan.transformer_offload or not plan.text_encoder_on_gpu
    assert bool(store.kept) == offloaded  # the streamed models are offloaded again after the job
    if plan.transformer == "bf16":
        torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-5)


def test_model_cpu_offload_onloads_the_transformer_before_the_pose_branch(make_tiny_pipe, inputs, reference,
                                                                           monkeypatch):
    pipe = make_tiny_pipe()
    with meta_offloading(monkeypatch) as store:
        pipe.enable_model_cpu_offload(device="cpu")
        assert store.kept  # every model starts offloaded
        got = run_checked(pipe, inputs, batch_guidance=True)
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-5)
