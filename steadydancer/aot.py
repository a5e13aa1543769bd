"""Ahead-of-time compilation: `torch.export` + AOTInductor, one graph per input shape (and LoRA state), bound to the
live weights of the module that calls it.

Two granularities share the machinery:

- the transformer's repeated block (`SteadyDancerTransformer3DModel._repeated_blocks`): one graph, compiled once,
  run by all 40 blocks, each with its own weights (what the Space compiles on ZeroGPU, `steadydancer_space.zerogpu`);
- the whole transformer (`compile_transformer_aot`, on a dedicated GPU).

Why ahead of time: ZeroGPU runs each request in a GPU worker where `torch.compile` is not available, so a graph is
compiled once inside a long start-up GPU call and only loaded afterwards. The recipe::

    @spaces.GPU(duration=...)  # start-up, on the GPU
    def build():
        return build_block_package(pipe, **example_job)  # one short job, stopped at the first block call

    install_block_aot(pipe.transformer, build())  # main process; every later GPU call uses the graph

How it differs from `spaces.aoti_apply`: that one empties the module's parameters and serves the weights frozen in
the compiled artifact, and has no fallback for a shape it was not compiled for. Here the package holds no weights; on
first use in a process it is loaded once and bound to the calling module's live parameters (`load_constants`,
``user_managed``: shared, not copied; rebound when the next block calls it, as `spaces.aoti_blocks_load` does). So
the pose branch keeps its weights, one graph per resolution shares one set of weights, a call of another shape or
LoRA state runs eagerly, and `steadydancer.presets.PresetSwitch`'s in-place swaps are seen by the graph.
`spaces.aoti_capture` and `spaces.aoti_compile` are used when the `spaces` package is importable.

Not exportable: diffusers hooks (fp8 layerwise casting, group offloading); `export_module` refuses them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._pytree as pytree

from .models import PoseFeatures

logger = logging.getLogger(__name__)

# What ZeroGPU's aoti_compile sets too: the package holds no weights, and nothing is precomputed from the weights
# (such constants would go stale when a preset switch swaps weights in place).
INDUCTOR_CONFIGS: dict[str, Any] = {
    "aot_inductor.package_constants_in_so": False,
    "always_keep_tensor_constants": True,
    "joint_graph_constant_folding": False,
}

if PoseFeatures not in pytree.SUPPORTED_NODES:  # the pipeline passes the pose branch's output as this dataclass
    torch.export.register_dataclass(PoseFeatures, serialized_type_name="steadydancer.PoseFeatures")


def _spaces():
    """The ZeroGPU `spaces` package, or None."""
    if importlib.util.find_spec("spaces") is None:
        return None
    import spaces

    return spaces


# --------------------------------------------------------------------------------------------- keys
def input_signature(args: tuple, kwargs: dict) -> tuple:
    """What a graph is specialised on: the call's structure, each tensor's shape, dtype and device type, and the
    other values."""
    leaves, spec = pytree.tree_flatten((args, kwargs))
    described = tuple(
        (tuple(x.shape), str(x.dtype), x.device.type) if isinstance(x, torch.Tensor) else repr(x) for x in leaves
    )
    return str(spec), described


def adapter_state(module) -> tuple:
    """The LoRA layers that run in `module`: (active adapters, disabled) of its PEFT layers, () without any."""
    if "peft" not in sys.modules:  # no LoRA was ever loaded in this process
        return ()
    from peft.tuners.tuners_utils import BaseTunerLayer

    layer = next((m for m in module.modules() if isinstance(m, BaseTunerLayer)), None)
    if layer is None:
        return ()
    return tuple(layer.active_adapters), bool(layer.disable_adapters)


# --------------------------------------------------------------------------------------------- capture, export
class _Captured(Exception):
    def __init__(self, args, kwargs):
        super().__init__("module call captured")
        self.call = (args, kwargs)


@contextlib.contextmanager
def _forward_replaced(module, forward):
    """`module.forward` is `forward` inside the block; what it was (an instance attribute or the class's) after."""
    previous = module.__dict__.get("forward")
    module.forward = forward
    try:
        yield
    finally:
        if previous is None:
            del module.forward
        else:
            module.forward = previous


def capture_call(module, run: Callable[[], Any]) -> tuple[tuple, dict]:
    """Runs `run()` up to the first call of `module` and returns that call's (args, kwargs)."""
    spaces = _spaces()
    if spaces is not None:
        with spaces.aoti_capture(module) as call:
            run()
        return tuple(call.args), dict(call.kwargs)

    def capture(*args, **kwargs):
        raise _Captured(args, kwargs)

    with _forward_replaced(module, capture):
        try:
            run()
        except _Captured as captured:
            return captured.call
    raise RuntimeError(f"The run finished without calling {type(module).__name__}.")


def capture_transformer_call(pipe, **pipeline_kwargs) -> tuple[tuple, dict]:
    """The transformer's first call in `pipe(**pipeline_kwargs)`.

    With ``batch_guidance=False`` (advised with AoT) every pass of a job has this signature; with batched guidance
    the steps inside the pose-guidance window have a larger batch (capture those too, or they run eagerly).
    """
    return capture_call(pipe.transformer, lambda: pipe(**pipeline_kwargs))


def capture_block_call(pipe, **pipeline_kwargs) -> tuple[tuple, dict]:
    """The first transformer block's first call in `pipe(**pipeline_kwargs)`: (hidden_states (B, S, D),
    encoder_hidden_states (B, 257 + 512, D), timestep_proj (B, 6, D), rotary_emb), every block's signature."""
    return capture_call(pipe.transformer.blocks[0], lambda: pipe(**pipeline_kwargs))


def export_module(module, args: tuple, kwargs: dict, *, dynamic_shapes=None) -> torch.export.ExportedProgram:
    """`torch.export` of the module's eager forward for these example inputs (no graph breaks: export is whole)."""
    hooked = [name for name, sub in module.named_modules() if _has_hooks(sub)]
    if hooked:
        raise ValueError(
            f"{hooked[0] or 'the module'} carries diffusers hooks (fp8 layerwise casting or group offloading), "
            "which torch.export cannot capture; compile ahead of time only with the resident or float8-compute plans."
        )
    forward = module.__dict__.get("forward")
    eager = forward._eager if isinstance(forward, AotForward) else None
    with torch.no_grad(), (_forward_replaced(module, eager) if eager else contextlib.nullcontext()):
        return torch.export.export(module, args=tuple(args), kwargs=dict(kwargs), dynamic_shapes=dynamic_shapes)



def _has_hooks(module) -> bool:
    registry = getattr(module, "_diffusers_hook", None)
    return bool(registry is not None and getattr(registry, "hooks", None))


# --------------------------------------------------------------------------------------------- compile
@dataclass
class AotPackage:
    """An AOTInductor package without weights, and what it was compiled for. Picklable: return it from a ZeroGPU
    start-up call to the main process."""

    data: bytes
    signature: tuple
    adapters: tuple
    constants: dict[str, torch.Tensor] = field(default_factory=dict)  # lifted non-parameter tensors, if any


def compile_package(
    exported: torch.export.ExportedProgram, *, adapters: tuple = (), inductor_configs: dict[str, Any] | None = None
) -> AotPackage:
    """Compiles an exported module with AOTInductor (through `spaces.aoti_compile` when importable).

    adapters: the LoRA state the module was exported in (`adapter_state(module)`; () without LoRA layers).
    """
    configs = {**(inductor_configs or {}), **INDUCTOR_CONFIGS}
    args, kwargs = exported.example_inputs
    data = None
    spaces = _spaces()
    if spaces is not None:
        archive = getattr(spaces.aoti_compile(exported, configs), "archive_file", None)
        if archive is not None:
            data = archive.getvalue() if isinstance(archive, io.BytesIO) else bytes(archive)
    if data is None:
        buffer = io.BytesIO()
        torch._inductor.aoti_compile_and_package(exported, package_path=buffer, inductor_configs=configs)
        data = buffer.getvalue()
    constants = {name: value.detach().cpu() for name, value in exported.constants.items() if isinstance(value, torch.Tensor)}
    return AotPackage(data, input_signature(args, kwargs), adapters, constants)


def build_package(pipe, *, inductor_configs: dict[str, Any] | None = None, **pipeline_kwargs) -> AotPackage:
    """The whole transformer's graph for the first call of `pipe(**pipeline_kwargs)`, in the current LoRA state."""
    args, kwargs = capture_transformer_call(pipe, **pipeline_kwargs)
    exported = export_module(pipe.transformer, args, kwargs)
    return compile_package(exported, adapters=adapter_state(pipe.transformer), inductor_configs=inductor_configs)


def build_block_package(pipe, *, inductor_configs: dict[str, Any] | None = None, **pipeline_kwargs) -> AotPackage:
    """The repeated block's graph for the block calls of `pipe(**pipeline_kwargs)`, in the current LoRA state."""
    block = pipe.transformer.blocks[0]
    args, kwargs = capture_block_call(pipe, **pipeline_kwargs)
    exported = export_module(block, args, kwargs)
    return compile_package(exported, adapters=adapter_state(block), inductor_configs=inductor_configs)


# --------------------------------------------------------------------------------------------- run
class LoadedGraphs:
    """The graphs loaded in this process (a ZeroGPU worker), shared by every module that runs them. A graph holds
    one module's weights at a time and is rebound when another module (the next block) calls it."""

    def __init__(self):
        self._models: dict[tuple, Any] = {}
        self._bound: dict[tuple, tuple] = {}

    def run(self, key: tuple, package: AotPackage, module, args, kwargs):
        model = self._models.get(key)
        if model is None:
            model = self._models[key] = torch._inductor.aoti_load_package(io.BytesIO(package.data))
        constants = _constants_for(model, package, module)
        pointers = tuple(t.data_ptr() for t in constants.values())
        if self._bound.get(key) != pointers:  # another module's weights, or these moved (e.g. to another device)
            model.load_constants(constants, check_full_update=True, user_managed=True)
            self._bound[key] = pointers
        return model(*args, **kwargs)


def _constants_for(model, package: AotPackage, module) -> dict[str, torch.Tensor]:
    live = _live_tensors(module)
    device = next(iter(live.values())).device if live else torch.device("cpu")
    constants = {}
    for name in model.get_constant_fqns():
        if name in live:
            constants[name] = live[name]
        elif name in package.constants:
            if package.constants[name].device != device:  # moved once per process and device
                package.constants[name] = package.constants[name].to(device)
            constants[name] = package.constants[name]
        else:
            raise KeyError(f"The compiled graph needs {name!r}, which {type(module).__name__} does not have.")
    return constants


class AotForward:
    """Installed as ``module.forward``: runs the compiled graph whose inputs and LoRA state match the call, and the
    eager forward otherwise."""

    def __init__(self, module, eager, graphs: LoadedGraphs):
        self._module = weakref.ref(module)
        self._eager = eager
        self.graphs = graphs
        self.packages: dict[tuple, AotPackage] = {}
        self.compiled_calls = 0
        self.eager_calls = 0
        self._warned: set[tuple] = set()

    def add(self, package: AotPackage) -> None:
        self.packages[(package.signature, package.adapters)] = package

    def __call__(self, *args, **kwargs):
        module = self._module()
        key = (input_signature(args, kwargs), adapter_state(module))
        package = self.packages.get(key)
        if package is None:
            if key not in self._warned:
                self._warned.add(key)
                logger.info("No ahead-of-time graph for this %s call (shape or LoRA state); running eagerly.",
                            type(module).__name__)
            self.eager_calls += 1
            return self._eager(*args, **kwargs)
        self.compiled_calls += 1
        return self.graphs.run(key, package, module, args, kwargs)


def _live_tensors(module) -> dict[str, torch.Tensor]:
    """The module's parameters and buffers by name; tensor subclasses (torchao float8) unwrapped as export names
    them (what ZeroGPU's own binding does too)."""
    if any(type(p) not in (torch.Tensor, torch.nn.Parameter) for p in module.parameters()):
        from torch._functorch._aot_autograd.subclass_parametrization import unwrap_tensor_subclass_parameters

        module = _shallow_clone(module)
        unwrap_tensor_subclass_parameters(module)
    return {**dict(module.named_buffers()), **dict(module.named_parameters(remove_duplicate=False))}


def _shallow_clone(module: torch.nn.Module) -> torch.nn.Module:
    clone = object.__new__(module.__class__)
    clone.__dict__ = module.__dict__.copy()
    clone._parameters = module._parameters.copy()
    clone._buffers = module._buffers.copy()
    clone._modules = {k: _shallow_clone(v) for k, v in module._modules.items() if v is not None}
    return clone


def install_aot(module, package: AotPackage, graphs: LoadedGraphs | None = None) -> AotForward:
    """Adds a compiled graph to `module` (installing the dispatching forward on first use)."""
    forward = module.__dict__.get("forward")
    if not isinstance(forward, AotForward):
        forward = AotForward(module, forward if forward is not None else module.forward, graphs or LoadedGraphs())
        module.forward = forward
    forward.add(package)
    return forward


def install_block_aot(transformer, package: AotPackage) -> list[AotForward]:
    """Adds a compiled block graph to every block of `transformer`; the blocks share one loaded graph."""
    first = transformer.blocks[0].__dict__.get("forward")
    graphs = first.graphs if isinstance(first, AotForward) else LoadedGraphs()
    return [install_aot(block, package, graphs) for block in transformer.blocks]


def aot_calls(module) -> tuple[int, int]:
    """(compiled, eager) calls so far of the dispatching forwards in `module` (itself and its submodules)."""
    forwards = [m.__dict__["forward"] for m in module.modules() if isinstance(m.__dict__.get("forward"), AotForward)]
    return sum(f.compiled_calls for f in forwards), sum(f.eager_calls for f in forwards)


def uninstall_aot(module) -> None:
    """Back to the eager forward, for `module` and its submodules."""
    for sub in module.modules():
        if isinstance(sub.__dict__.get("forward"), AotForward):
            del sub.forward


def compile_transformer_aot(
    pipe, *, inductor_configs: dict[str, Any] | None = None, **pipeline_kwargs
) -> AotPackage | None:
    """Captures, exports, compiles and installs the whole transformer in one go (on a dedicated GPU). Returns the
    package, or None with a log line when compiling is not possible here (no C++ compiler, an unexportable model):
    the transformer then stays eager.

    Export after loading LoRAs and applying the memory plan, with the attention backend it will run with.
    """
    try:
        package = build_package(pipe, inductor_configs=inductor_configs, **pipeline_kwargs)
    except Exception as error:  # compiling is an optimisation: any failure leaves the eager model in place
        logger.warning("Ahead-of-time compilation failed (%s: %s); the transformer stays eager.",
                       type(error).__name__, error)
        return None
    install_aot(pipe.transformer, package)
    return package
