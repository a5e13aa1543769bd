"""Where the repository, its examples, the released-code fixtures and the tests' saved output are."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
SHARED_FIXTURES = Path(os.environ.get("STEADYDANCER_FIXTURES", REPO.parent / "shared" / "fixtures"))
TEST_OUTPUT = Path(os.environ.get("STEADYDANCER_TEST_OUTPUT", REPO / "test-output"))


def shared_fixture(name: str) -> Path:
    """Path of a fixture of the released code, or skip when ../shared/fixtures is absent."""
    path = SHARED_FIXTURES / name
    if not path.exists():
        pytest.skip(f"released-code fixture {path} not present (it lives in ../shared/fixtures beside the repo)")
    return path
