"""App-side logic of the SteadyDancer Space, kept out of `app.py` so it can be tested without a browser.

- `config`: runtime settings from environment variables and command-line flags (stdlib only, read before torch).
- `runtime`: loading the pipeline and the pose detector once per process (the real model or `--tiny`).
- `duration`: the GPU-time estimate ZeroGPU is asked for.
- `video_io`: H.264/AAC mp4 writing with the driving video's audio, and probing.
- `poses`: the pose step as the app runs it (inputs from files, caching, warnings for people).
- `service`: extract poses, generate, write the outputs; progress and cancellation.
- `examples`: the drawn characters and keypoint dances of `examples/` (made by `examples/make_examples.py`).
"""
