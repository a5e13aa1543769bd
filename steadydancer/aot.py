"""Ahead-of-time compilation of the transformer: `torch.export` + AOTInductor, one graph per input shape (and LoRA
state), all bound to the transformer's own weights.

Why ahead of time: ZeroGPU runs each request in a fresh GPU worker, so `torch.compile`'s just-in-time work would be
redone per request; an AOTInductor package is compiled once (inside a long start-up GPU call) and only loaded
afterwards. The recipe::

    @spaces.GPU(duration=1500)  # start-up, on the GPU
    def build():
        return build_package(pipe, **example_job)  # one short job, stopped at its first transformer pass

    install_aot(pipe.transformer, build())  # main process; every later GPU call uses the graph

On a dedicated GPU, `compile_transformer_aot(pipe, **example_job)` does both.

How it differs from ZeroGPU's own `spaces.aoti_apply`: that one replaces the module's weights by the copy held in
the compiled artifact and empties every parameter of the module, including the pose branch that the pipeline still
calls eagerly at each step (`transformer.encode_pose`), and it freezes the weights at export time. Here the package
holds no weights; on first use in a process it is loaded and bound to the live parameters (`load_constants`,
``user_managed``: shared, not copied). So the pose branch keeps working, one graph per resolution shares one set of
weights, and `steadydancer.presets.PresetSwitch` stays usable: its in-place weight swaps are seen by the graph, and
the LoRA layers' on/off state is part of the key (compile once per preset; a state without a graph runs eagerly).
`spaces.aoti_capture` and `spaces.aoti_compile` are used when the `spaces` package is importable.

Not exportable: diffusers hooks (fp8 layerwise casting, group offloading); `export_transformer` refuses them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import weakref
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import patch

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


def adapter_state(transformer) -> tuple:
    """The LoRA layers that run: (active adapters, disabled) of the PEFT layers, () without any."""
    if not getattr(transformer, "_hf_peft_config_loaded", False):
        return ()
    from peft.tuners.tuners_utils import BaseTunerLayer

    layer = next((m for m in transformer.modules() if isinstance(m, BaseTunerLayer)), None)
    if layer is None:
        return ()
    return tuple(layer.active_adapters), bool(layer.disable_adapters)


# --------------------------------------------------------------------------------------------- capture, export
class _Captured(Exception):
    def __init__(self, args, kwargs):
        super().__init__("transformer call captured")
        self.call = (args, kwargs)


def capture_transformer_call(pipe, **pipeline_kwargs) -> tuple[tuple, dict]:
    """Runs `pipe(**pipeline_kwargs)` up to its first transformer call and returns that call's (args, kwargs).

    With ``batch_guidance=False`` (advised with AoT) every pass of a job has this signature; with batched guidance
    the steps inside the pose-guidance window have a larger batch (capture those too, or they run eagerly).
    """
    transformer = pipe.transformer
    spaces = _spaces()
    if spaces is not None:
        with spaces.aoti_capture(transformer) as call:
            pipe(**pipeline_kwargs)
        return tuple(call.args), dict(call.kwargs)

    def capture(*args, **kwargs):
        raise _Captured(args, kwargs)

    with patch.object(transformer, "forward", new=capture):
        try:
            pipe(**pipeline_kwargs)
        except _Captured as captured:
            return captured.call
    raise RuntimeError("The pipeline finished without calling its transformer.")


def export_transformer(transformer, args: tuple, kwargs: dict, *, dynamic_shapes=None) -> torch.export.ExportedProgram:
    """`torch.export` of the transformer's eager forward for these example inputs."""
    hooked = [name for name, module in transformer.named_modules() if _has_hooks(module)]
    if hooked:
        raise ValueError(
            f"{hooked[0] or 'the transformer'} carries diffusers hooks (fp8 layerwise casting or group offloading), "
            "which torch.export cannot capture; compile ahead of time only with the resident or float8-compute plans."
        )
    forward = transformer.__dict__.get("forward")
    eager = forward._eager if isinstance(forward, AotTransformerForward) else None
    with torch.no_grad(), (patch.object(transformer, "forward", new=eager) if eager else contextlib.nullcontext()):
        return torch.export.export(transformer, args=tuple(args), kwargs=dict(kwargs), dynamic_shapes=dynamic_shapes)


def _has_hooks(module) -> bool:
    registry = getattr(module, "_diffusers_hook", None)
    return bool(registry is not None and getattr(registry, "hooks", None))


# --------------------------------------------------------------------------------------------- compile, install
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
    """Compiles an exported transformer with AOTInductor (through `spaces.aoti_compile` when importable).

    adapters: the LoRA state the transformer was exported in (`adapter_state(transformer)`; () without LoRA layers).
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
    """Captures the transformer's first call in `pipe(**pipeline_kwargs)`, exports it and compiles it, for the
    pipeline's current LoRA state (run it once per preset to serve several)."""
    args, kwargs = capture_transformer_call(pipe, **pipeline_kwargs)
    exported = export_transformer(pipe.transformer, args, kwargs)
    return compile_package(exported, adapters=adapter_state(pipe.transformer), inductor_configs=inductor_configs)


class AotTransformerForward:
    """Installed as ``transformer.forward``: runs the compiled graph whose inputs and LoRA state match the call, and
    the eager forward otherwise. Each package is loaded on first use in the current process (a ZeroGPU worker) and
    bound to the transformer's live weights."""

    def __init__(self, transformer, eager):
        self._transformer = weakref.ref(transformer)
        self._eager = eager
        self.packages: dict[tuple, AotPackage] = {}
        self._loaded: dict[tuple, Any] = {}
        self._bound: dict[tuple, tuple] = {}
        self.compiled_calls = 0
        self.eager_calls = 0
        self._warned: set[tuple] = set()

    def add(self, package: AotPackage) -> None:
        key = (package.signature, package.adapters)
        self.packages[key] = package
        self._loaded.pop(key, None)
        self._bound.pop(key, None)

    def __call__(self, *args, **kwargs):
        transformer = self._transformer()
        key = (input_signature(args, kwargs), adapter_state(transformer))
        package = self.packages.get(key)
        if package is None:
            if key not in self._warned:
                self._warned.add(key)
                logger.info("No ahead-of-time graph for this transformer call (shape or LoRA state); running eagerly.")
            self.eager_calls += 1
            return self._eager(*args, **kwargs)
        model = self._loaded.get(key)
        if model is None:
            model = self._loaded[key] = torch._inductor.aoti_load_package(io.BytesIO(package.data))
        self._bind(key, model, package, transformer)
        self.compiled_calls += 1
        return model(*args, **kwargs)

    def _bind(self, key, model, package: AotPackage, transformer) -> None:
        live = _live_tensors(transformer)
        device = next(iter(live.values())).device if live else torch.device("cpu")
        names = model.get_constant_fqns()
        constants = {}
        for name in names:
            if name in live:
                constants[name] = live[name]
            elif name in package.constants:
                # Cached on the package, moved once per process and device.
                if package.constants[name].device != device:
                    package.constants[name] = package.constants[name].to(device)
                constants[name] = package.constants[name]
            else:
                raise KeyError(f"The compiled graph needs {name!r}, which the transformer does not have.")
        pointers = tuple(t.data_ptr() for t in constants.values())
        if self._bound.get(key) != pointers:  # first use, or weights moved (e.g. to another device)
            model.load_constants(constants, check_full_update=True, user_managed=True)
            self._bound[key] = pointers


def _live_tensors(transformer) -> dict[str, torch.Tensor]:
    """The transformer's parameters and buffers by name; tensor subclasses (torchao float8) unwrapped as export
    names them (what ZeroGPU's own binding does too)."""
    module = transformer
    if any(type(p) not in (torch.Tensor, torch.nn.Parameter) for p in transformer.parameters()):
        from torch._functorch._aot_autograd.subclass_parametrization import unwrap_tensor_subclass_parameters

        module = _shallow_clone(transformer)
        unwrap_tensor_subclass_parameters(module)
    return {**dict(module.named_buffers()), **dict(module.named_parameters(remove_duplicate=False))}


def _shallow_clone(module: torch.nn.Module) -> torch.nn.Module:
    clone = object.__new__(module.__class__)
    clone.__dict__ = module.__dict__.copy()
    clone._parameters = module._parameters.copy()
    clone._buffers = module._buffers.copy()
    clone._modules = {k: _shallow_clone(v) for k, v in module._modules.items() if v is not None}
    return clone


def install_aot(transformer, package: AotPackage) -> AotTransformerForward:
    """Adds a compiled graph to the transformer (installing the dispatching forward on first use)."""
    forward = transformer.__dict__.get("forward")
    if not isinstance(forward, AotTransformerForward):
        forward = AotTransformerForward(transformer, forward if forward is not None else transformer.forward)
        transformer.forward = forward
    forward.add(package)
    return forward


def uninstall_aot(transformer) -> None:
    """Back to the eager forward."""
    forward = transformer.__dict__.get("forward")
    if isinstance(forward, AotTransformerForward):
        del transformer.forward


def compile_transformer_aot(
    pipe, *, inductor_configs: dict[str, Any] | None = None, **pipeline_kwargs
) -> AotPackage | None:
    """Captures, exports, compiles and installs in one go (on a dedicated GPU; on ZeroGPU split it as in the
    module docstring). Returns the package, or None with a log line when compiling is not possible here (no C++
    compiler, an unexportable model): the transformer then stays eager.

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
