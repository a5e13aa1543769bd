"""The one-command GPU measurement (bench/device_check.sh), dry-run on the CPU: `TINY=1` runs every phase's code at
tiny shapes, and the files it writes are checked row by row, then read back by the roofline (`steadydancer.roofline.measured_pass_tflops`)."""

import json
import math
import os
import subprocess
import sys
import time

import pytest

from helpers.paths import REPO
PHASE_ROWS = {
    "env": set(),
    "transformer": {"matmul_ceiling", "pass_best_576p", "pass_best_480p", "pass_plain_576p", "pass_plain_480p",
                    "step2_sequential_576p", "step2_batched_576p", "step3_batched_576p"},
    "job": {"pass_bf16_576p", "job_fast_576p", "vae_decode_576p", "pass_fp8_576p", "vae_decode_480p"},
    "compile": {"pass_compiled_576p"},
}
TINY_SIZES = {"576p": (5, 32, 64), "480p": (5, 32, 48)}


@pytest.fixture(scope="module")
def device_run(tmp_path_factory):
    """One TINY run of the script; a fake wheel in WHL_DIR shows whether it tried to install anything."""
    tmp = tmp_path_factory.mktemp("device_check")
    whl = tmp / "whl"
    whl.mkdir()
    (whl / "diffusers-0.0.1-py3-none-any.whl").write_bytes(b"not a wheel")
    env = {**os.environ, "TINY": "1", "PYTHON": sys.executable, "OUT": str(tmp / "out"), "WHL_DIR": str(whl),
           "SITE_DIR": str(tmp / "site"), "TORCHINDUCTOR_CACHE_DIR": str(tmp / "inductor")}
    env.pop("FORCE_INSTALL", None)
    start = time.monotonic()
    proc = subprocess.run(["bash", str(REPO / "bench" / "device_check.sh")], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=400)
    proc.wall_s = time.monotonic() - start
    proc.out = tmp / "out"
    proc.tmp = tmp
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return proc


def load(run, name):
    return json.loads((run.out / f"{name}.json").read_text())


def test_tiny_run_writes_every_file_and_installs_nothing(device_run):
    names = sorted(p.name for p in device_run.out.iterdir())
    assert names == sorted(["device_check.log", "summary.json", *(f"{p}.json" for p in PHASE_ROWS)])
    assert not (device_run.tmp / "site").exists()  # no pip install in TINY mode
    log = (device_run.out / "device_check.log").read_text()
    assert "wheels: not installed" in log and "install diffusers" not in log
    assert log == device_run.stdout  # the log is what was printed
    for phase in PHASE_ROWS:
        assert f"phase {phase} done" in log


@pytest.mark.parametrize("phase", sorted(PHASE_ROWS))
def test_phase_files_hold_measured_rows(device_run, phase):
    from steadydancer.flops import transformer_pass_flops

    doc = load(device_run, phase)
    assert doc["format"] == "steadydancer-device-check/1" and doc["phase"] == phase
    assert doc["tiny"] is True and doc["device"] == "cpu" and doc["hardware"]["kind"] == "cpu"
    assert doc["errors"] == [] and doc["skipped"] == [] and doc["finished"]
    assert 0 < doc["wall_s"] < doc["budget_s"]
    rows = {r["name"]: r for r in doc["rows"]}
    assert PHASE_ROWS[phase] <= set(rows), set(rows)
    for name in PHASE_ROWS[phase]:
        r = rows[name]
        assert "running" not in r and "failed" not in r and "truncated" not in r
        assert r["n"] == r["repeats"] == len(r["times_s"]) >= 1
        assert all(t > 0 for t in r["times_s"]) and r["first_s"] > 0
        assert r["min_s"] == min(r["times_s"]) and r["median_s"] >= r["min_s"]
        assert r["peak_memory_gib"] > 0 and r["peak_memory_kind"] == "cpu_peak_rss"
        if r["kind"] in ("pass", "step"):
            size = TINY_SIZES[r["geometry"]]
            assert (r["frames"], r["height"], r["width"]) == size
            flops = transformer_pass_flops(doc["config"], *size)
            assert r["tokens"] == flops["tokens"]
            flop = flops["total"]
            assert r["flop"] == pytest.approx(r["passes"] * flop)
            assert r["tflops"] == pytest.approx(r["flop"] / r["min_s"] / 1e12, rel=1e-3)
    if phase == "env":
        assert doc["imports_ok"] is True and doc["versions"]["diffusers"]
        assert doc["schedules"]["released"] == dict(steps=40, passes=91, steps_by_passes={"2": 29, "3": 11})
        assert doc["schedules"]["fast"] == dict(steps=4, passes=5, steps_by_passes={"1": 3, "2": 1})
    if phase == "transformer":
        assert doc["config_name"] == "tiny" and doc["params"] > 0
        assert doc["best_backend_used"] == rows["pass_best_576p"]["backend"] != "native (default)"
        assert rows["pass_plain_576p"]["backend"] == "native (default)" and rows["pass_plain_576p"]["finite"]
        assert doc["best_vs_plain_rel_l2"]["576p"] < 0.05  # two attention kernels, same numbers
        assert [rows[f"step{n}_{v}_576p"]["passes"] for n, v in ((2, "sequential"), (2, "batched"), (3, "batched"))] == [2, 2, 3]
    if phase == "job":
        job = rows["job_fast_576p"]
        assert job["transformer_samples"] == 5 and job["transformer_calls"] == 4  # 3 single + 1 batched pose step
        assert len(job["steps_s"]) == 4 and all(s > 0 for s in job["steps_s"]) and job["decode_s"] > 0
        assert sum(job["steps_s"]) + job["decode_s"] <= job["min_s"] * 1.01
        assert job["output_shape"] == [1, 5, 3, 32, 64]  # (B, frames, C, H, W)
        assert rows["vae_decode_576p"]["output_shape"] == [1, 3, 5, 32, 64]
        assert rows["vae_decode_480p"]["output_shape"] == [1, 3, 5, 32, 48]
        assert doc["fast_paths_fp8"]["fp8_weights"] is True and doc["weights_gib_fp8"] < doc["weights_gib_bf16"]
        assert 0 < rows["pass_fp8_576p"]["rel_l2_vs_bf16"] < 0.2
    if phase == "compile":
        assert doc["fast_paths"]["compiled_blocks"] is True and doc["compile_backend"] == "aot_eager"
        eager = next(r for r in load(device_run, "transformer")["rows"] if r["name"] == "pass_best_576p")
        assert doc["eager_from"].startswith("transformer.json") and doc["eager_min_s"] == eager["min_s"]
        assert rows["pass_compiled_576p"]["backend"] == eager["backend"]


def test_summary_derives_the_figures_from_the_rows(device_run):
    s = load(device_run, "summary")
    rows = {r["name"]: r for p in PHASE_ROWS for r in load(device_run, p)["rows"]}
    f = s["figures"]
    assert s["tiny"] is True and all(not ph["errors"] for ph in s["phases"].values())
    for g in ("576p", "480p"):
        assert f["pass"][g]["best_s"] == rows[f"pass_best_{g}"]["min_s"]
        assert f["pass"][g]["plain_s"] == rows[f"pass_plain_{g}"]["min_s"]
    step2, step3 = rows["step2_batched_576p"]["min_s"], rows["step3_batched_576p"]["min_s"]
    released = f["released_preset_576p"]
    assert released["passes"] == 91 and released["denoise_s"] == pytest.approx(29 * step2 + 11 * step3, abs=0.01)
    assert released["denoise_plus_decode_s"] == pytest.approx(
        29 * step2 + 11 * step3 + rows["vae_decode_576p"]["min_s"], abs=0.01)
    assert f["fast_preset_576p"]["passes"] == 5 and f["fast_preset_576p"]["job_s"] == rows["job_fast_576p"]["min_s"]
    assert f["vae_decode"]["576p"]["s_per_frame"] == pytest.approx(rows["vae_decode_576p"]["min_s"] / 5, abs=1e-4)
    assert f["fp8_576p"]["fp8_over_bf16"] == pytest.approx(
        rows["pass_fp8_576p"]["min_s"] / rows["pass_bf16_576p"]["min_s"], abs=1e-3)
    assert f["compile_576p"]["first_call_s"] == rows["pass_compiled_576p"]["first_s"]
    # The table is the last thing printed (a device call returns the tail of the output).
    assert "SteadyDancer device check on cpu" in device_run.stdout.split("[device_check")[-2]


def test_the_roofline_reads_what_the_device_check_writes(device_run, tmp_path):
    from steadydancer.roofline import measured_pass_tflops

    assert measured_pass_tflops("cpu", device_run.out) is None  # CPU dry runs are no measurements
    best = 0.0
    for phase in PHASE_ROWS:  # the same files as if an H200 had measured them
        doc = load(device_run, phase)
        doc.update(tiny=False, hardware={**doc["hardware"], "name": "NVIDIA H200"})
        (tmp_path / f"h200_{phase}.json").write_text(json.dumps(doc))
        best = max([best] + [r["tflops"] for r in doc["rows"] if r["name"].startswith("pass_best")])
    assert best > 0 and measured_pass_tflops("h200", tmp_path) == best
    assert measured_pass_tflops("h100", tmp_path) is None


def test_collect_copies_named_after_the_hardware_and_refuses_tiny(device_run, tmp_path):
    from bench.device_phases import collect, hardware_prefix

    with pytest.raises(ValueError, match="TINY"):
        collect(device_run.out, tmp_path / "results")
    assert not (tmp_path / "results").exists()
    written = collect(device_run.out, tmp_path / "results", prefix="h200", allow_tiny=True)
    assert sorted(p.name for p in written) == sorted(
        ["h200_device_check.log", "h200_summary.json", *(f"h200_{p}.json" for p in PHASE_ROWS)])
    assert json.loads((tmp_path / "results" / "h200_job.json").read_text()) == load(device_run, "job")
    assert hardware_prefix("NVIDIA H200") == "h200"
    assert hardware_prefix("NVIDIA A100-SXM4-80GB") == "a100"
    assert hardware_prefix("NVIDIA H100 80GB HBM3") == "h100"


def test_wheel_selection_keeps_the_images_packages(tmp_path, capsys):
    from bench.device_phases import select_wheels

    for name in ("diffusers-0.42.1-py3-none-any.whl", "numpy-1.0.0-cp312-cp312-manylinux_2_17_x86_64.whl",
                 "not_installed_anywhere_pkg-1.0-py3-none-any.whl", "README.txt"):
        (tmp_path / name).write_bytes(b"")
    chosen = [p.name for p in select_wheels(tmp_path)]
    # diffusers: always ours; numpy: this interpreter has a new enough one; the missing package: installed.
    assert chosen == ["diffusers-0.42.1-py3-none-any.whl", "not_installed_anywhere_pkg-1.0-py3-none-any.whl"]
    assert "keep the image's numpy" in capsys.readouterr().err


def test_a_phase_killed_at_its_cap_keeps_what_it_measured(tmp_path):
    """The hard cap (timeout's SIGTERM) lands mid-phase: the file still holds the rows measured before it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bench.device_phases", "transformer", str(tmp_path), "--tiny",
                             "--budget", "300"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 120
    path = tmp_path / "transformer.json"
    try:
        while time.monotonic() < deadline:  # wait for the first measured pass, then stop the phase as timeout would
            if path.exists():
                try:
                    rows = json.loads(path.read_text())["rows"]
                except ValueError:
                    rows = []
                if any(r["name"] == "matmul_ceiling" and r["n"] == 3 for r in rows):
                    break
            time.sleep(0.05)
        proc.terminate()
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 124, output[-3000:]
    doc = json.loads(path.read_text())
    rows = {r["name"]: r for r in doc["rows"]}
    assert rows["matmul_ceiling"]["n"] == 3 and rows["matmul_ceiling"]["min_s"] > 0
    assert doc["errors"][-1]["where"] == "hard cap" and "finished" not in doc
