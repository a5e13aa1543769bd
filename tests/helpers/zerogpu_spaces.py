"""A stand-in for ZeroGPU's `spaces` package, faithful to the contracts the app relies on, recording each call.

- `GPU(duration=..., size=...)`: the decorated function runs in place (ZeroGPU runs it in a GPU worker); the
  duration and size asked for are recorded, a callable duration evaluated on the call's arguments as ZeroGPU does.
- `aoti_capture(module)`: a context manager that replaces ``module.forward`` with a function recording the first
  call's arguments and stopping the caller there; the exception ends the ``with`` block (spaces 0.51's contract).
- `aoti_compile(exported, inductor_configs)`: returns an object with ``archive_file`` (an AOTInductor package in a
  BytesIO), built by PyTorch's own AOTInductor; with ``compiler_available=False`` it raises as a worker without a
  C++ toolchain does.
"""

import contextlib
import importlib.machinery
import io
import types

import torch


class CompilerUnavailable(RuntimeError):
    pass


def make_spaces(compiler_available: bool = True, inductor_configs: dict | None = None) -> types.ModuleType:
    """A module object to put in ``sys.modules["spaces"]``; ``spaces.calls`` lists what was called, in order."""
    spaces = types.ModuleType("spaces")
    spaces.__spec__ = importlib.machinery.ModuleSpec("spaces", None)
    spaces.calls = []

    def GPU(fn=None, *, duration=None, size=None):
        def decorate(task):
            def run(*args, **kwargs):
                seconds = duration(*args, **kwargs) if callable(duration) else duration
                spaces.calls.append(("GPU", task.__name__, seconds, size))
                return task(*args, **kwargs)

            return run

        return decorate(fn) if fn is not None else decorate

    @contextlib.contextmanager
    def aoti_capture(module, call_method="forward"):
        class Captured(Exception):
            pass

        call = types.SimpleNamespace(args=(), kwargs={})

        def capture(*args, **kwargs):
            call.args, call.kwargs = args, kwargs
            raise Captured

        spaces.calls.append(("aoti_capture", type(module).__name__))
        previous = module.__dict__.get(call_method)
        setattr(module, call_method, capture)
        try:
            yield call
        except Captured:
            pass
        finally:
            if previous is None:
                delattr(module, call_method)
            else:
                setattr(module, call_method, previous)

    def aoti_compile(exported, inductor_configs_=None):
        args, kwargs = exported.example_inputs
        shapes = [tuple(t.shape) for t in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        spaces.calls.append(("aoti_compile", shapes[0]))
        if not compiler_available:
            raise CompilerUnavailable("no C++ compiler in this worker")
        archive = io.BytesIO()
        configs = {**(inductor_configs_ or {}), **(inductor_configs or {})}
        torch._inductor.aoti_compile_and_package(exported, package_path=archive, inductor_configs=configs)
        return types.SimpleNamespace(archive_file=archive)

    spaces.GPU, spaces.aoti_capture, spaces.aoti_compile = GPU, aoti_capture, aoti_compile
    return spaces
