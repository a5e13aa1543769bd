"""Which attention backends `best_attention_backend` considers on a given GPU generation (capability mocked)."""

import pytest
import torch

from steadydancer import acceleration
from steadydancer.acceleration import attention_backend_candidates, best_attention_backend

FA3 = {"_flash_3", "_flash_3_hub"}


@pytest.fixture
def gpu(monkeypatch):
    """A CUDA device of a chosen compute capability with every attention package installed and the Hub reachable."""

    def make(capability):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
        monkeypatch.setattr(acceleration, "_module_available", lambda name: True)
        monkeypatch.setattr(acceleration, "_offline", lambda: False)
        return torch.device("cuda")

    return make


@pytest.mark.parametrize("capability", [(12, 0), (10, 0), (8, 9), (8, 0)])  # RTX Pro 6000, B200, L40S, A100
def test_flash_attention_3_is_never_a_candidate_off_hopper(gpu, capability):
    candidates = attention_backend_candidates(gpu(capability))
    assert not FA3 & set(candidates)
    assert candidates[0] == "flash" and candidates[-1] == "native"


def test_flash_attention_3_leads_on_hopper(gpu):
    assert attention_backend_candidates(gpu((9, 0)))[:2] == ["_flash_3", "_flash_3_hub"]


def test_blackwell_probes_only_its_candidates_and_takes_the_first_that_works(gpu, monkeypatch):
    device = gpu((12, 0))
    probed = []

    def works(name, device, dtype=None):
        probed.append(name)
        return name == "flash_hub"  # e.g. the flash-attn 2 package has no sm_120 build, the Hub kernel has

    monkeypatch.setattr(acceleration, "attention_backend_works", works)
    assert best_attention_backend(device, torch.bfloat16) == "flash_hub"
    assert probed == ["flash", "flash_hub"]
