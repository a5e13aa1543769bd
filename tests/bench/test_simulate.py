"""The simulated 14B job (`bench.simulate`): real parameter names and counts, the activation peak checked against
PyTorch's own MemTracker, the committed table re-simulated, the plans it yields, the roofline and torchao on the CPU."""

import contextlib
import io
import json

import pytest
import torch
from helpers.paths import shared_fixture

from bench import simulate
from steadydancer import memory, roofline
from steadydancer.loading import convert_released_state_dict
from steadydancer.sizing import RESOLUTIONS

KEYS_FIXTURE = "official_14b_keys.json"


@pytest.fixture(scope="module")
def models():
    return simulate.build_models()


@pytest.fixture(scope="module")
def released_keys():
    return json.loads(shared_fixture(KEYS_FIXTURE).read_text())


def test_released_checkpoint_loads_strictly_into_the_simulated_transformer(models, released_keys):
    with torch.device("meta"):
        checkpoint = {name: torch.empty(shape) for name, shape in released_keys["shapes"].items()}
    converted = convert_released_state_dict(checkpoint)
    ours = models.transformer.state_dict()
    assert sorted(converted) == sorted(ours)  # every name used, none missing
    assert {n: tuple(t.shape) for n, t in converted.items()} == {n: tuple(t.shape) for n, t in ours.items()}
    assert simulate.parameter_count(models.transformer) == released_keys["num_parameters"] == 16_396_718_736


def run_cli(*argv) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert simulate.main([*argv, "--json"]) == 0
    return json.loads(out.getvalue())


def test_cli_denoise_step_agrees_with_memtracker(models):
    """The must-show job; its batched step's activation against MemTracker on the same batched transformer call."""
    from torch.distributed._tools.mem_tracker import MemTracker

    report = run_cli("--height", "576", "--width", "1024", "--frames", "81", "--preset", "quality", "--memory-gb", "80")
    assert report["transformer_parameters"] == 16_396_718_736
    assert report["plan"] == "resident" and report["batch_guidance"]
    assert set(report["phases"]) == set(memory.PHASES)
    assert report["peak_gb"] == max(p["peak_gb"] for p in report["phases"].values()) <= 80 * memory.USABLE_FRACTION
    assert set(report["seconds"]) == set(roofline.GPUS)

    # Independently: the step's three passes as one batch of 3, straight into the transformer, under MemTracker.
    bf16, batch, (lat_f, lat_h, lat_w) = torch.bfloat16, 3, (21, 72, 128)
    with models.fake_mode:
        def z(*shape, dtype=bf16):
            return torch.zeros(*shape, dtype=dtype)

        inputs = dict(hidden_states=z(batch, 16, lat_f, lat_h, lat_w), timestep=z(batch, dtype=torch.float32),
                      encoder_hidden_states=z(batch, 512, 4096), encoder_hidden_states_image=z(batch, 257, 1280),
                      encoder_hidden_states_pose_image=z(batch, 257, 1280),
                      image_condition=z(batch, 20, lat_f, lat_h, lat_w),
                      reference_latents=z(batch, 36, 1, lat_h, lat_w),
                      pose_reference_latents=z(batch, 16, 1, lat_h, lat_w),
                      pose_latents=z(batch, 16, lat_f, lat_h, lat_w))
        tracker = MemTracker()
        tracker.track_external(models.transformer)
        with tracker, torch.no_grad():
            models.transformer(**inputs, return_dict=False)
        peak = sum(tracker.get_tracker_snapshot("peak")[torch.device("cpu")].values()) / 2  # "Total" counted once
        parameters = simulate.parameter_count(models.transformer) * 2
    independent_gb = (peak - parameters) / 1e9
    simulated_gb = report["phases"]["denoise_step"]["activation_gb"]
    assert simulated_gb == pytest.approx(independent_gb, rel=0.02)


def test_committed_table_matches_a_fresh_simulation(models):
    table = memory.load_simulated_memory()
    height, width = simulate.bucket_size("480p")
    fresh = simulate.simulate_job(models, table["frames"], height, width, "fast")
    committed = table["buckets"]["480p"]
    assert (committed["height"], committed["width"]) == (height, width)
    assert fresh.activations() == committed["presets"]["fast"]
    assert {k: round(v, 3) for k, v in fresh.weights.items()} == table["weights_gb"]


@pytest.mark.parametrize("memory_gb, capability", [(48, (12, 0)), (24, (8, 9))])
@pytest.mark.parametrize("bucket", ["480p", "576p"])
def test_fast_preset_fits_zerogpu_large_and_24_gb_or_is_refused(memory_gb, capability, bucket):
    height, width = simulate.bucket_size(bucket)
    try:
        plan = memory.plan_memory(memory_gb, capability, height=height, width=width, num_frames=81, preset="fast")
    except memory.MemoryPlanError as error:
        assert f"{memory_gb} GB GPU" in str(error) and "needs" in str(error)
    else:
        assert plan.estimated_peak_gb <= 0.92 * memory_gb
        assert plan.estimated_peak_gb == max(plan.phase_peaks_gb.values())


def test_a_job_no_plan_fits_is_refused_naming_the_card_and_the_need():
    with pytest.raises(memory.MemoryPlanError, match=r"8 GB GPU.*needs \d+\.\d GB"):
        memory.plan_memory(8, (8, 9), height=720, width=1280, preset="quality")


def test_smaller_cards_unbatch_the_guidance_passes_before_streaming_the_transformer():
    table = memory.load_simulated_memory()
    acts = table["buckets"]["576p"]["presets"]["quality"]
    plan = memory.plan_memory(36, (8, 0))
    assert (plan.name, plan.batch_guidance) == ("fp8", False)
    batched = memory.phase_peaks_gb(table["weights_gb"], acts, memory.MemoryPlan(
        "fp8", "float8_storage", False, False, False, 0.0, "", True))
    assert max(batched.values()) > 36 * memory.USABLE_FRACTION  # the batched variant was tried and did not fit


def test_measured_pass_replaces_the_efficiency_factors(tmp_path):
    frames, height, width = 81, 576, 1024
    assumed = roofline.phase_seconds("h200", frames, height, width, "fast", results_dir=tmp_path)["denoise"]
    doc = dict(format=roofline.DEVICE_CHECK_FORMAT, hardware=dict(name="NVIDIA H200"),
               rows=[dict(name="pass_best_576p", tflops=400.0)])
    (tmp_path / "h200_transformer.json").write_text(json.dumps(doc))
    measured = roofline.phase_seconds("h200", frames, height, width, "fast", results_dir=tmp_path)["denoise"]
    from steadydancer.flops import CONFIG_14B, transformer_pass_flops

    assert measured == pytest.approx(5 * transformer_pass_flops(CONFIG_14B, frames, height, width)["total"] / 400e12)
    assert measured != pytest.approx(assumed)


def test_every_resolution_bucket_is_in_the_table():
    assert set(memory.load_simulated_memory()["buckets"]) == set(RESOLUTIONS)


def test_torchao_int8_weight_only_runs_on_the_cpu():
    quantization = pytest.importorskip("torchao.quantization")
    layer = torch.nn.Linear(64, 32)
    x = torch.randn(4, 64)
    expected = layer(x)
    model = torch.nn.Sequential(layer)
    quantization.quantize_(model, quantization.Int8WeightOnlyConfig())
    assert type(model[0].weight) is not torch.nn.Parameter  # a torchao int8 tensor now holds the weight
    got = model(x)
    assert (got - expected).abs().max() < 0.02 * expected.abs().max()


def test_readme_hardware_table_is_the_command_output():
    from helpers.paths import REPO

    text = (REPO / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- hardware:start -->", "<!-- hardware:end -->"
    assert text.count(start) == 1 and text.count(end) == 1
    in_readme = text.split(start, 1)[1].split(end, 1)[0].strip()
    assert in_readme == simulate.hardware_summary_markdown(simulate.hardware_rows()).strip(), (
        "README.md's hardware table is out of date: paste `python -m bench.simulate --hardware-summary` between "
        "the markers.")


def test_readme_multi_gpu_table_is_the_command_output():
    from helpers.paths import REPO

    text = (REPO / "README.md").read_text(encoding="utf-8")
    in_readme = text.split("<!-- multi-gpu:start -->", 1)[1].split("<!-- multi-gpu:end -->", 1)[0].strip()
    assert in_readme == simulate.multi_gpu_markdown().strip(), (
        "README.md's several-GPU table is out of date: paste `python -m bench.simulate --multi-gpu` between the "
        "markers.")
