"""Writes the example gallery's files into this directory (drawn characters, keypoint dances, one driving video
with a synthesized beat). Everything is generated here; no third-party media. Run from the repository root:

    python examples/make_examples.py

The drawing and the dances live in `steadydancer/app_support/examples.py`.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run as a script from anywhere

from steadydancer.app_support.examples import make_examples  # noqa: E402

if __name__ == "__main__":
    for path in make_examples(HERE):
        print(f"{os.path.getsize(path) / 1024:7.1f} KB  {os.path.relpath(path)}")
