"""What several test folders share: paths, app launching, synthetic inputs and LoRA files, a fake Hub.

Test modules import from here (or take fixtures from conftest.py), never from each other."""
