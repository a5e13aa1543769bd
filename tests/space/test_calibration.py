"""steadydancer_space.calibration: measured device-check figures read back for the GPU-time estimate. The results
files are synthetic, written here in the device check's format; the expected values are computed here from first
principles (a 2x2 solve, the FLOP model, linear interpolation), not through the module."""

import json

import pytest

from steadydancer.flops import CONFIG_14B, transformer_pass_flops
from steadydancer_space.calibration import load_calibration, load_calibrations, pass_tokens

H200 = dict(name="NVIDIA H200", kind="gpu", memory_gib=139.8, sms=132, capability="9.0")
SIZES = {"576p": (81, 576, 1024), "480p": (81, 480, 832)}


def row(name, kind, variant, geometry, seconds, passes=1, **extra):
    """A measured row as `bench.device_phases.Phase.measure` writes it (one timed call)."""
    frames, height, width = SIZES[geometry]
    flop = passes * transformer_pass_flops(CONFIG_14B, frames, height, width)["total"] if kind in ("pass", "step") else None
    return dict(name=name, kind=kind, variant=variant, backend="_native_cudnn", geometry=geometry, frames=frames,
                height=height, width=width, tokens=pass_tokens(frames, height, width), batch=1, passes=passes,
                warmup=1, repeats=1, times_s=[seconds], first_s=seconds * 1.1, n=1, min_s=seconds, median_s=seconds,
                flop=flop, tflops=flop / seconds / 1e12 if flop else None, peak_memory_gib=40.0,
                peak_memory_kind="cuda_max_allocated", **extra)


def phase_doc(phase, rows, hardware=H200, started="2026-12-01T10:00:00+0000", tiny=False):
    return dict(format="steadydancer-device-check/1", phase=phase, tiny=tiny, started=started, budget_s=148.0,
                device="cuda", hardware=hardware, config_name="14b", config=dict(CONFIG_14B), dtype="bfloat16",
                geometries={k: list(v) for k, v in SIZES.items()}, rows=rows, errors=[], skipped=[], notes=[],
                wall_s=100.0, finished=started)


def write(directory, name, doc):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(json.dumps(doc, indent=1))


def test_no_measured_file_gives_none(tmp_path):
    assert load_calibration(tmp_path / "missing") is None
    assert load_calibration(tmp_path) is None
    # Other JSON in bench/results (the CPU harness's files, a summary), a broken file: still nothing measured.
    write(tmp_path, "cpu_default.json", dict(environment={}, rows=[dict(benchmark="pass", min_s=1.0)]))
    write(tmp_path, "h200_summary.json", dict(format="steadydancer-device-check/1", phase="summary", rows={}))
    (tmp_path / "broken.json").write_text("{")
    assert load_calibration(tmp_path) is None
    # A device-check file without a pass row (the transformer phase died) is no calibration either.
    write(tmp_path, "h200_env.json", phase_doc("env", []))
    assert load_calibration(tmp_path) is None and load_calibrations(tmp_path) == {}


def test_two_sizes_fit_a_t_plus_b_t_squared_exactly(tmp_path):
    write(tmp_path, "h200_transformer.json", phase_doc("transformer", [
        row("pass_best_576p", "pass", "best", "576p", 7.0),
        row("pass_best_480p", "pass", "best", "480p", 3.9),
        row("pass_plain_576p", "pass", "plain", "576p", 9.5),  # not the best backend: not in the fit
    ]))
    c = load_calibration(tmp_path)
    assert c.hardware == "NVIDIA H200" and c.hardware_info["memory_gib"] == 139.8 and not c.tiny
    assert c.sources == ("h200_transformer.json",) and c.fit == "quadratic"
    t1, t2 = 52_992, 35_880
    assert [p.tokens for p in c.pass_points] == [t2, t1]
    # s = a T + b T^2 through (t1, 7.0) and (t2, 3.9), by Cramer's rule.
    det = t1 * t2**2 - t2 * t1**2
    a = (7.0 * t2**2 - 3.9 * t1**2) / det
    b = (t1 * 3.9 - t2 * 7.0) / det
    assert a > 0 and b > 0
    assert c.pass_seconds(t1) == pytest.approx(7.0, rel=1e-9)
    assert c.pass_seconds(t2) == pytest.approx(3.9, rel=1e-9)
    for tokens in (10_000, 44_000, 75_600):  # below, between, above (720p: 23 * 45 * 80 = 82,800 is further out)
        assert c.pass_seconds(tokens) == pytest.approx(a * tokens + b * tokens**2, rel=1e-9)
    assert c.pass_seconds_for(81, 720, 1280) == pytest.approx(a * 82_800 + b * 82_800**2, rel=1e-9)
    assert c.pass_seconds_for(81, 576, 1024) == pytest.approx(7.0)
    with pytest.raises(ValueError):
        c.pass_seconds(0)


def test_one_size_scales_by_the_flop_model(tmp_path):
    write(tmp_path, "h200_transformer.json", phase_doc("transformer", [row("pass_best_576p", "pass", "best", "576p", 7.0)]))
    c = load_calibration(tmp_path)
    assert c.fit == "flop-shape"
    f = transformer_pass_flops(CONFIG_14B, 81, 576, 1024)
    t0 = f["tokens"]
    quad = f["self_attn_sdpa"] / t0**2  # the L^2 term: self-attention scores and values
    lin = (f["total"] - f["self_attn_sdpa"]) / t0
    for tokens in (35_880, 52_992, 82_800):
        expected = 7.0 * (lin * tokens + quad * tokens**2) / (lin * t0 + quad * t0**2)
        assert c.pass_seconds(tokens) == pytest.approx(expected, rel=1e-9)
    # The quadratic share: 2x the tokens costs more than 2x, less than 4x.
    assert 2 < c.pass_seconds(2 * 52_992) / c.pass_seconds(52_992) < 4


def test_a_negative_quadratic_fit_falls_back_to_the_flop_shape(tmp_path):
    # 1.48x the tokens for 1.1x the time: the exact fit would need b < 0 (noise), so the FLOP shape is scaled to fit.
    write(tmp_path, "h200_transformer.json", phase_doc("transformer", [
        row("pass_best_576p", "pass", "best", "576p", 5.5), row("pass_best_480p", "pass", "best", "480p", 5.0)]))
    c = load_calibration(tmp_path)
    assert c.fit == "flop-shape" and c.a >= 0 and c.b >= 0
    shapes = []
    for (frames, height, width), seconds in ((SIZES["576p"], 5.5), (SIZES["480p"], 5.0)):
        f = transformer_pass_flops(CONFIG_14B, frames, height, width)
        shapes.append((f["tokens"], f["self_attn_sdpa"] / f["tokens"] ** 2,
                       (f["total"] - f["self_attn_sdpa"]) / f["tokens"], seconds))
    quad = sum(s[1] for s in shapes) / 2
    lin = sum(s[2] for s in shapes) / 2
    model = [(lin * t + quad * t * t, s) for t, _, _, s in shapes]
    k = sum(m * s for m, s in model) / sum(m * m for m, _ in model)  # least squares of s = k * model
    for tokens in (35_880, 52_992, 60_000):
        assert c.pass_seconds(tokens) == pytest.approx(k * (lin * tokens + quad * tokens**2), rel=1e-9)


def test_vae_decode_is_linear_in_frames_and_interpolated_in_pixels(tmp_path):
    write(tmp_path, "h200_transformer.json", phase_doc("transformer", [row("pass_best_576p", "pass", "best", "576p", 7.0)]))
    write(tmp_path, "h200_job.json", phase_doc("job", [
        row("vae_decode_576p", "vae_decode", "fp32", "576p", 12.0, latent_frames=21),
        row("vae_decode_480p", "vae_decode", "fp32", "480p", 8.0, latent_frames=21),
    ]))
    c = load_calibration(tmp_path)
    px1, px2 = 576 * 1024, 480 * 832
    per1, per2 = 12.0 / 81 / px1, 8.0 / 81 / px2  # seconds per frame and pixel
    assert c.vae_decode_seconds(81, 576, 1024) == pytest.approx(12.0)
    assert c.vae_decode_seconds(41, 480, 832) == pytest.approx(8.0 * 41 / 81)
    assert c.vae_decode_seconds_per_frame(576, 1024) == pytest.approx(12.0 / 81)
    px = 512 * 896  # between: per-pixel cost interpolated linearly in the pixel count
    w = (px - px2) / (px1 - px2)
    assert c.vae_decode_seconds(81, 512, 896) == pytest.approx(81 * px * ((1 - w) * per2 + w * per1))
    assert c.vae_decode_seconds(81, 720, 1280) == pytest.approx(81 * 720 * 1280 * per1)  # beyond: held
    assert c.vae_decode_seconds(81, 256, 448) == pytest.approx(81 * 256 * 448 * per2)


def test_batched_steps_jobs_and_the_released_schedule(tmp_path):
    write(tmp_path, "h200_transformer.json", phase_doc("transformer", [
        row("pass_best_576p", "pass", "best", "576p", 7.0), row("pass_best_480p", "pass", "best", "480p", 3.9),
        row("step2_sequential_576p", "step", "sequential", "576p", 14.2, passes=2),
        row("step2_batched_576p", "step", "batched", "576p", 13.3, passes=2),
        row("step3_batched_576p", "step", "batched", "576p", 19.95, passes=3),
    ]))
    write(tmp_path, "h200_job.json", phase_doc("job", [
        row("pass_bf16_576p", "pass", "bf16", "576p", 7.1),
        row("job_fast_576p", "job", "fast", "576p", 48.0, passes=5, steps_s=[7.1, 13.3, 7.1, 7.1], decode_s=12.0),
        row("pass_fp8_576p", "pass", "fp8", "576p", 7.8),
    ]))
    write(tmp_path, "h200_compile.json", phase_doc("compile", [row("pass_compiled_576p", "pass", "compiled", "576p", 6.3)]))
    c = load_calibration(tmp_path)
    assert c.step_seconds == {2: 13.3, 3: 19.95} and c.sequential_step_seconds == {2: 14.2}
    assert c.step_tokens == 52_992
    assert c.step_factor(1) == 1.0 and c.step_factor(4) == 1.0  # not measured
    assert c.step_factor(2) == pytest.approx(13.3 / 14.0) and c.step_factor(3) == pytest.approx(19.95 / 21.0)
    released = [2] * 29 + [3] * 11
    assert c.denoise_seconds(81, 576, 1024, released) == pytest.approx(29 * 13.3 + 11 * 19.95)
    assert c.fast_job_seconds == 48.0 and c.fast_job_tokens == 52_992
    assert c.fp8_over_bf16 == pytest.approx(7.8 / 7.1) and c.compile_speedup == pytest.approx(7.0 / 6.3)
    assert len(c.sources) == 3


def test_tiny_runs_are_left_out_and_the_newest_run_wins(tmp_path):
    write(tmp_path, "tiny_transformer.json", phase_doc("transformer", [row("pass_best_576p", "pass", "best", "576p", 0.1)],
                                                       hardware=dict(name="cpu (x86_64)", kind="cpu"), tiny=True))
    assert load_calibration(tmp_path) is None
    assert load_calibration(tmp_path, include_tiny=True).pass_seconds(52_992) == pytest.approx(0.1)
    write(tmp_path, "h200_transformer.json", phase_doc("transformer", [row("pass_best_576p", "pass", "best", "576p", 8.0)],
                                                       started="2026-12-01T10:00:00+0000"))
    write(tmp_path, "h200_run2_transformer.json", phase_doc("transformer", [row("pass_best_576p", "pass", "best", "576p", 7.0)],
                                                            started="2026-12-02T10:00:00+0000"))
    c = load_calibration(tmp_path)
    assert c.hardware == "NVIDIA H200" and c.pass_seconds(52_992) == pytest.approx(7.0)
    assert c.measured == "2026-12-02T10:00:00+0000"


def test_hardware_is_chosen_by_name_or_by_the_latest_measurement(tmp_path):
    h100 = dict(name="NVIDIA H100 80GB HBM3", kind="gpu", memory_gib=79.1)
    write(tmp_path, "h200_transformer.json", phase_doc("transformer", [row("pass_best_576p", "pass", "best", "576p", 7.0)],
                                                       started="2026-12-01T10:00:00+0000"))
    write(tmp_path, "h100_transformer.json", phase_doc("transformer", [row("pass_best_576p", "pass", "best", "576p", 7.5)],
                                                       hardware=h100, started="2026-12-03T10:00:00+0000"))
    assert set(load_calibrations(tmp_path)) == {"NVIDIA H200", "NVIDIA H100 80GB HBM3"}
    assert load_calibration(tmp_path).hardware == "NVIDIA H100 80GB HBM3"  # measured last
    assert load_calibration(tmp_path, hardware="h200").pass_seconds(52_992) == pytest.approx(7.0)
    assert load_calibration(tmp_path, hardware="a100") is None


def test_the_estimate_uses_measured_figures_when_present(tmp_path):
    """With the device check's figures for the GPU at hand, the estimate's transformer time is passes x the measured
    pass at that token count (not the FLOP model), and it says so."""
    from steadydancer_space.estimate import estimate_gpu_seconds

    write(tmp_path, "h200_transformer.json", phase_doc("transformer", [
        row("pass_best_576p", "pass", "best", "576p", 7.0), row("pass_best_480p", "pass", "best", "480p", 3.9)]))
    calibration = load_calibration(tmp_path, hardware="h200")
    measured = estimate_gpu_seconds(81, 576, 1024, gpu="h200", calibration=calibration)
    modelled = estimate_gpu_seconds(81, 576, 1024, gpu="h200")
    assert measured.transformer_seconds == pytest.approx(91 * 7.0)
    flop = transformer_pass_flops(CONFIG_14B, 81, 576, 1024)["total"]
    assert modelled.transformer_seconds == pytest.approx(91 * flop / 400e12)
    assert measured.measured and "(measured)" in measured.describe()
    assert not modelled.measured and "FLOP-model estimate" in modelled.describe()
