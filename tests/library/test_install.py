"""The library as a package: `pip install .` into a fresh virtual environment, imported from outside the repo."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from helpers.paths import REPO

pytestmark = pytest.mark.slow  # pip installs the package into a fresh virtual environment

PACKAGE_FILES = ("pyproject.toml", "README.md", "steadydancer")


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=300, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with `pip install .` of a copy of the package files; returns its Python.

    Installing torch, diffusers and the rest from scratch would take minutes, so the venv sees this interpreter's
    site-packages through a .pth file (dependencies and pip), and the package is installed without dependencies.
    """
    root = tmp_path_factory.mktemp("install")
    source = root / "source"  # a copy, so the build's egg-info and build/ stay out of the repo
    source.mkdir()
    for name in PACKAGE_FILES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    venv_dir = root / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv_dir)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a virtual environment here (python -m venv failed: {made.stderr.strip()})")
    python = _venv_python(venv_dir)
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_outer_site_packages.pth").write_text("\n".join(sorted(ours)) + "\n")
    try:
        import setuptools  # noqa: F401

        build = ["--no-build-isolation", "--no-index"]  # build with this setuptools, nothing downloaded
    except ImportError:
        build = []  # pip fetches setuptools into an isolated build environment
    _run([python, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q", *build, source])
    return python


def test_pip_install_then_import_from_outside_the_repo(installed, tmp_path):
    check = (
        "import steadydancer\n"
        "from steadydancer import SteadyDancerPipeline, SteadyDancerTransformer3DModel, prepare_poses\n"
        "print(steadydancer.__file__)\n"
    )
    module_file = Path(_run([installed, "-c", check], cwd=tmp_path).stdout.strip().splitlines()[-1])
    venv = installed.parent.parent
    assert module_file.is_relative_to(venv), f"imported {module_file}, not the copy installed in {venv}"
    packages = {p.name for p in module_file.parent.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == {"models", "pose"}
    site = module_file.parent.parent
    assert not (site / "steadydancer_space").exists() and not (site / "tests").exists()


def test_the_verify_command_is_installed(installed, tmp_path):
    script = installed.parent / ("steadydancer-verify.exe" if os.name == "nt" else "steadydancer-verify")
    assert "checks this implementation" in _run([script, "--help"], cwd=tmp_path).stdout


def test_importing_the_library_or_its_pose_package_never_imports_gradio(tmp_path):
    check = (
        "import sys, steadydancer, steadydancer.pose\n"
        "assert not any(m == 'gradio' or m.startswith('gradio.') for m in sys.modules), 'gradio imported'\n"
        "assert 'diffusers' not in sys.modules and 'torch' not in sys.modules, 'the pose package stays light'\n"
        "names = [getattr(steadydancer, n) for n in steadydancer.__all__]\n"
        "assert not any(m == 'gradio' or m.startswith('gradio.') for m in sys.modules), 'gradio imported'\n"
    )
    _run([sys.executable, "-c", check], cwd=REPO)
