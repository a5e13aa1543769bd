"""Pose extraction of a whole clip: person tracking against detecting every frame (developer tool).

Times :class:`~steadydancer.pose.PoseTracker` (``DWPoseDetector.tracker()``, what
``prepare_poses`` uses on a video) frame by frame on a 1280x720 clip, with the random-weight
YOLOX-L and RTMPose-L of :mod:`bench.pose_detector` (the real architectures, input sizes and
compute). Random weights give meaningless boxes and keypoints, with which a tracker loses the
"person" on every frame; so each model runs in full on its real input and its output is then
replaced by that of a person standing in the middle: a person box from the detector, and
from the pose model 133 confident keypoints filling the crop as a tracked person does (their
box, enlarged by the tracker's margin and the crop's 1.25, is the crop again). The tracker,
the crops and all pre- and post-processing are the library's, unchanged; only the models'
numbers are stand-ins, which costs well under a millisecond a call.

    python -m bench.pose_tracking [--frames 481] [--baseline-frames 33] [--redetect-every 8 16]
                                  [--height 720 --width 1280] [--threads N] [--out PATH]

Tracking is timed on all ``--frames``; detecting every frame (``redetect_every=1``, the
released behaviour) on about ``--baseline-frames`` of them, spread over the clip, and its mean
is multiplied out to the clip (its cost does not depend on the frame's position). The modes
take turns frame by frame, so that a shared machine's changing load hits them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

from steadydancer.pose.tracking import TRACK_MARGIN

from .pose_detector import random_detector

PERSON = (0.35, 0.1, 0.65, 0.9)   # the stand-in person box, fractions of the frame (x1, y1, x2, y2)


class PaidSession:
    """Runs the wrapped ONNX Runtime session in full, then returns ``outputs(inputs)`` instead of its result."""

    def __init__(self, session, outputs):
        self.session, self.outputs, self.calls = session, outputs, 0

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, names, feeds):
        self.calls += 1
        self.session.run(names, feeds)
        return self.outputs()


def _yolox_person(det_input_hw, letterbox_ratio, det_size):
    """Raw YOLOX output (1, 8400, 85) with one person anchor on the PERSON box."""
    dh, dw = det_size
    x1, y1, x2, y2 = (np.array(PERSON) * [dw, dh, dw, dh]) * letterbox_ratio
    out = np.zeros((1, sum((det_input_hw[0] // s) * (det_input_hw[1] // s) for s in (8, 16, 32)), 85), np.float32)
    out[0, :, 2:4] = -5.0
    stride, cx, cy = 32, (x1 + x2) / 2, (y1 + y2) / 2
    gx, gy = int(cx // stride), int(cy // stride)
    row = out[0, out.shape[1] - (det_input_hw[0] // 32) * (det_input_hw[1] // 32) + gy * (det_input_hw[1] // 32) + gx]
    row[:4] = [cx / stride - gx, cy / stride - gy, np.log((x2 - x1) / stride), np.log((y2 - y1) / stride)]
    row[4], row[5] = 0.95, 0.95
    return lambda: [out]


def _steady_person(pose_input_wh, seed=0):
    """SimCC (1, 133, 2w), (1, 133, 2h) of confident keypoints whose box, enlarged by the tracker's margin
    and the crop's 1.25, is the crop again: the next frame's crop is the same, as for a person standing still."""
    w, h = pose_input_wh
    half_h = 0.5 / (TRACK_MARGIN * 1.25)
    half_w = half_h / 2  # narrower than the crop, which is widened to 3:4 about the person
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0.5 - half_w, 0.5 + half_w, 133), rng.uniform(0.5 - half_h, 0.5 + half_h, 133)
    x[:2], y[:2] = [0.5 - half_w, 0.5 + half_w], [0.5 - half_h, 0.5 + half_h]  # the box's corners
    sx, sy = np.zeros((1, 133, 2 * w), np.float32), np.zeros((1, 133, 2 * h), np.float32)
    sx[0, np.arange(133), np.rint(2 * x * w).astype(int)] = 0.9
    sy[0, np.arange(133), np.rint(2 * y * h).astype(int)] = 0.9
    return lambda: [sx, sy]


def time_clip(trackers: dict, frames, count: int, baseline_every: int) -> dict:
    """Wall and CPU seconds of each frame for each tracker, interleaved frame by frame so that all of them
    share the machine's load (a shared one here); the baseline (key 1) runs on one frame in ``baseline_every``."""
    times = {k: dict(wall=[], cpu=[], tracked=[]) for k in trackers}
    for i in range(count):
        image = frames[i % len(frames)]
        for every, tracker in trackers.items():
            if every == 1 and i % baseline_every:
                continue
            t, c = time.perf_counter(), time.process_time()
            found = tracker.detect(image)
            times[every]["wall"].append(time.perf_counter() - t)
            times[every]["cpu"].append(time.process_time() - c)
            times[every]["tracked"].append(found.tracked)
    return {k: {name: np.array(v) for name, v in d.items()} for k, d in times.items()}


def main(argv=None) -> None:
    from steadydancer.pose.detector import letterbox, resize_for_detection

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=481, help="clip length (481 = 30 s at 16 fps)")
    parser.add_argument("--baseline-frames", type=int, default=33, help="frames timed when detecting every frame")
    parser.add_argument("--redetect-every", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "cpu_pose_tracking.json"))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as d:
        det = random_detector(d, device=args.device, threads=args.threads)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8) for _ in range(4)]
    small = resize_for_detection(frames[0])
    _, ratio = letterbox(small, det.det_input_hw)
    det.det_session = PaidSession(det.det_session, _yolox_person(det.det_input_hw, ratio, small.shape[:2]))
    det.pose_session = PaidSession(det.pose_session, _steady_person(det.pose_input_wh))
    det.detect(frames[0])  # warm-up

    trackers = {every: det.tracker(redetect_every=every) for every in [1] + list(args.redetect_every)}
    baseline_every = max(1, args.frames // args.baseline_frames)
    load = os.getloadavg()
    times = time_clip(trackers, frames, args.frames, baseline_every)
    runs = []
    for every, tracker in trackers.items():
        wall, cpu, tracked = times[every]["wall"], times[every]["cpu"], times[every]["tracked"]
        run = dict(
            redetect_every=every, frames_timed=len(wall), mean_s=float(wall.mean()), median_s=float(np.median(wall)),
            cpu_mean_s=float(cpu.mean()), total_s=float(wall.sum()),
            detected_frame_mean_s=float(wall[~tracked].mean()),
            tracked_frame_mean_s=float(wall[tracked].mean()) if tracked.any() else None,
            detector_runs=tracker.detector_runs, pose_runs=tracker.frames + tracker.lost, lost=tracker.lost,
            clip_total_s=float(wall.mean() * args.frames),
            last_box_wh=[float(tracker.box[2] - tracker.box[0]), float(tracker.box[3] - tracker.box[1])],
        )
        runs.append(run)
        tracked_s = run["tracked_frame_mean_s"]
        print(f"redetect_every={every:2d}: {len(wall)} frames timed, {run['mean_s']:.3f} s/frame (median "
              f"{run['median_s']:.3f}, CPU {run['cpu_mean_s']:.3f}; detected {run['detected_frame_mean_s']:.3f}, "
              f"tracked {float('nan') if tracked_s is None else tracked_s:.3f}), detector {tracker.detector_runs}x, "
              f"lost {tracker.lost}; {args.frames} frames: {run['clip_total_s'] / 60:.1f} min", flush=True)

    result = dict(
        benchmark="pose_tracking", frame=f"{args.width}x{args.height}", clip_frames=args.frames,
        providers=det.providers, threads=args.threads or "default", cpus=os.cpu_count(),
        machine=platform.processor() or platform.machine(), runs=runs,
        load_average_before=list(load), load_average_after=list(os.getloadavg()),
        method=("random-weight YOLOX-L / RTMPose-L of the real architectures run in full every call; their "
                "outputs replaced by a steady person so the track is kept as with a real one"),
    )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
