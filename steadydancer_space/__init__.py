"""The SteadyDancer Space: everything between a visitor and the `steadydancer` library, testable without a browser.
`app.py` wires the page's events to its handlers and wraps the GPU part for ZeroGPU (`spaces.GPU`).

A request, top to bottom:
- `config`: the settings, each declared once (flag, environment variable, default, help).
- `request`: API values -> `AnimationRequest`, each value validated once, errors naming the API parameter.
- `plan`: the request resolved once -> `JobPlan` (the sampler that runs, sizes, windows, the GPU estimate).
- `service`: `extract` and `animate`, step by step over the modules below.
- `uploads`: files checked from their content; `poses`: the pose step (a small cache, warnings for people).
- `generation`: the GPU part (whole video or window by window); `cancellation`: cancels seen across processes.
- `outputs`: per-request folders and the files written; `reports`: what a visitor reads.
- `estimate`: the GPU time of one call (the roofline of `steadydancer.roofline` under the job's memory plan).
- `runtime`: the models of one process (the real model with its presets and memory plan, or `--tiny`).
- `errors`: the one place exceptions become messages; `middleware`: cancels and short raw calls; `page` and
  `layout`: the page's Gradio glue and components; `faults`: tiny mode's fault injection; `examples`: the gallery.
"""
