"""The SteadyDancer Space: everything between a visitor and the `steadydancer` library, testable without a browser.
`app.py` is the UI wiring (components, events, the `spaces.GPU` wrapper).

- `config`: the settings, from command-line flags and environment variables (the only reader of either).
- `request`: API values -> `AnimationRequest`, each value validated once, errors naming the API parameter.
- `uploads`: upload policy and limits; files checked from their content.
- `service`: the one orchestrator: GPU-time check, poses, generation (the GPU part), writing; progress and cancel.
- `poses`: the pose step as the app runs it (files in, a small cache, warnings for people).
- `runtime`: the models of one process (the real model with its presets and memory plan, or `--tiny`).
- `estimate` / `calibration`: the GPU time a job needs, from the FLOP model or from the device check's figures.
- `guard`: the one place exceptions become the messages people see; Gradio input and cancel plumbing.
- `faults`: tiny mode's fault injection and counters, for the tests.
- `examples`: the example table (the files are made by `examples/make_examples.py`).
"""
