import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = Path(os.environ.get("STEADYDANCER_FIXTURES", REPO.parent / "shared" / "fixtures"))


def shared_fixture(name: str) -> Path:
    """Path of a fixture of the released code, or skip when ../shared/fixtures is absent."""
    path = SHARED_FIXTURES / name
    if not path.exists():
        pytest.skip(f"released-code fixture {path} not present (it lives in ../shared/fixtures beside the repo)")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Tiny random components written in the Hub layouts: (transformer_dir, base_dir)."""
    from steadydancer.tiny import build_tiny_checkpoints

    return build_tiny_checkpoints(tmp_path_factory.mktemp("tiny"))
