"""torchao weight quantisation as the memory plan applies it (`steadydancer.memory`), on tiny components on the CPU:
the int8 weight-only text encoder."""

import pytest
import torch

from steadydancer.memory import MemoryPlan, apply_memory_plan, quantize_int8_weights

pytest.importorskip("torchao")


def encode(text_encoder, ids):
    with torch.no_grad():
        return text_encoder(ids).last_hidden_state


def test_int8_weight_only_text_encoder_stays_close_and_halves_its_linears(make_tiny_pipe):
    text_encoder = make_tiny_pipe().text_encoder.to(torch.bfloat16)
    ids = torch.randint(0, text_encoder.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(0))
    before = encode(text_encoder, ids).float()
    linears = [m for m in text_encoder.modules() if isinstance(m, torch.nn.Linear)]
    bf16_bytes = sum(m.weight.numel() * m.weight.element_size() for m in linears)

    quantize_int8_weights(text_encoder)

    from torchao.quantization import Int8Tensor

    assert all(isinstance(m.weight, Int8Tensor) for m in linears)
    int8_bytes = sum(m.weight.qdata.numel() * m.weight.qdata.element_size() for m in linears)
    assert int8_bytes * 2 == bf16_bytes  # one byte a weight instead of two (plus a scale per row)
    after = encode(text_encoder, ids).float()
    relative = (after - before).norm() / before.norm()
    assert relative < 0.05, relative


def test_the_plan_quantizes_the_text_encoder_it_keeps_on_the_device(make_tiny_pipe):
    plan = MemoryPlan("resident", "bf16", True, False, False, 0.0, "test")
    pipe = make_tiny_pipe()
    applied = apply_memory_plan(pipe, plan, "cpu", int8_text_encoder=True)
    assert applied.text_encoder == "int8" and applied.notes == []
    streamed = apply_memory_plan(make_tiny_pipe(), MemoryPlan("fp8", "bf16", False, False, False, 0.0, "test"), "cpu",
                                 int8_text_encoder=True)
    assert streamed.text_encoder == "as loaded"  # a streamed encoder keeps its precision


@pytest.mark.parametrize("capability, works", [((12, 0), True), ((8, 9), True), ((8, 0), False)])
def test_float8_compute_follows_a_known_card_without_asking_cuda(capability, works, monkeypatch):
    from steadydancer.memory import float8_compute_problem

    # ZeroGPU's main process: no GPU to ask, the card known from the size.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    problem = float8_compute_problem("cuda", capability)
    assert (problem is None) == works
    assert float8_compute_problem("cuda") == "no CUDA GPU on this machine"
