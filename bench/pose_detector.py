"""Per-frame timing of the DWPose ONNX wrapper without the real weights (developer tool).

Builds random-weight stand-ins with the real models' architecture sizes and input/output
signatures: YOLOX-L (CSPDarknet-53 + PAFPN + decoupled head, 1x3x640x640 -> 1x8400x85) and
RTMPose-L as in DWPose-l (CSPNeXt-L + RTMCC head, 1x3x384x288 -> simcc 1x133x576 and
1x133x768), exports them to ONNX with torch, and times :class:`DWPoseDetector` on a frame.
The compute matches the real files closely; the numbers are timings, not accuracy.

    python -m bench.pose_detector [--frames 10] [--height 720 --width 1280] [--threads N]

Needs torch (CPU is fine); torchvision is not used.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def _models():
    import torch
    from torch import nn

    class ConvBnAct(nn.Sequential):  # BN folds into the conv at export; keep it for realism
        def __init__(self, cin, cout, k=1, s=1, groups=1):
            super().__init__(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
                             nn.BatchNorm2d(cout), nn.SiLU())

    # -- YOLOX-L -----------------------------------------------------------------------
    class Bottleneck(nn.Module):
        def __init__(self, c, shortcut=True, cspnext=False):
            super().__init__()
            self.conv1 = ConvBnAct(c, c, 3 if cspnext else 1)
            self.conv2 = (nn.Sequential(ConvBnAct(c, c, 5, groups=c), ConvBnAct(c, c, 1)) if cspnext
                          else ConvBnAct(c, c, 3))
            self.shortcut = shortcut

        def forward(self, x):
            y = self.conv2(self.conv1(x))
            return x + y if self.shortcut else y

    class CSP(nn.Module):
        def __init__(self, cin, cout, n, shortcut=True, cspnext=False):
            super().__init__()
            mid = cout // 2
            self.main, self.short = ConvBnAct(cin, mid), ConvBnAct(cin, mid)
            self.blocks = nn.Sequential(*[Bottleneck(mid, shortcut, cspnext) for _ in range(n)])
            self.attention = (nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(2 * mid, 2 * mid, 1), nn.Hardsigmoid())
                              if cspnext else None)
            self.final = ConvBnAct(2 * mid, cout)

        def forward(self, x):
            y = torch.cat([self.blocks(self.main(x)), self.short(x)], 1)
            if self.attention is not None:
                y = y * self.attention(y)
            return self.final(y)

    class SPP(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1, self.conv2 = ConvBnAct(c, c // 2), ConvBnAct(c // 2 * 4, c)
            self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in (5, 9, 13))

        def forward(self, x):
            x = self.conv1(x)
            return self.conv2(torch.cat([x] + [p(x) for p in self.pools], 1))

    class YoloxL(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = ConvBnAct(12, 64, 3)
            self.dark2 = nn.Sequential(ConvBnAct(64, 128, 3, 2), CSP(128, 128, 3))
            self.dark3 = nn.Sequential(ConvBnAct(128, 256, 3, 2), CSP(256, 256, 9))
            self.dark4 = nn.Sequential(ConvBnAct(256, 512, 3, 2), CSP(512, 512, 9))
            self.dark5 = nn.Sequential(ConvBnAct(512, 1024, 3, 2), SPP(1024), CSP(1024, 1024, 3, False))
            self.lateral0, self.c3_p4 = ConvBnAct(1024, 512), CSP(1024, 512, 3, False)
            self.reduce1, self.c3_p3 = ConvBnAct(512, 256), CSP(512, 256, 3, False)
            self.bu2, self.c3_n3 = ConvBnAct(256, 256, 3, 2), CSP(512, 512, 3, False)
            self.bu1, self.c3_n4 = ConvBnAct(512, 512, 3, 2), CSP(1024, 1024, 3, False)
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.heads = nn.ModuleList(nn.ModuleDict(dict(
                stem=ConvBnAct(c, 256), cls=nn.Sequential(ConvBnAct(256, 256, 3), ConvBnAct(256, 256, 3)),
                reg=nn.Sequential(ConvBnAct(256, 256, 3), ConvBnAct(256, 256, 3)),
                cls_pred=nn.Conv2d(256, 80, 1), reg_pred=nn.Conv2d(256, 4, 1), obj_pred=nn.Conv2d(256, 1, 1)))
                for c in (256, 512, 1024))

        def forward(self, x):  # (1, 3, 640, 640)
            x = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
            d3 = self.dark3(self.dark2(self.stem(x)))
            d4 = self.dark4(d3)
            d5 = self.dark5(d4)
            f0 = self.lateral0(d5)
            f1 = self.reduce1(self.c3_p4(torch.cat([self.up(f0), d4], 1)))
            p3 = self.c3_p3(torch.cat([self.up(f1), d3], 1))
            p4 = self.c3_n3(torch.cat([self.bu2(p3), f1], 1))
            p5 = self.c3_n4(torch.cat([self.bu1(p4), f0], 1))
            outs = []
            for feat, h in zip((p3, p4, p5), self.heads):
                s = h["stem"](feat)
                c, r = h["cls"](s), h["reg"](s)
                o = torch.cat([h["reg_pred"](r), h["obj_pred"](r).sigmoid(), h["cls_pred"](c).sigmoid()], 1)
                outs.append(o.flatten(2))
            return torch.cat(outs, 2).permute(0, 2, 1)  # (1, 8400, 85)

    # -- RTMPose-L (DWPose-l) ------------------------------------------------------------
    class RTMPoseL(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(ConvBnAct(3, 32, 3, 2), ConvBnAct(32, 32, 3), ConvBnAct(32, 64, 3))
            stages = []
            for cin, cout, n, shortcut, spp in ((64, 128, 3, True, False), (128, 256, 6, True, False),
                                                (256, 512, 6, True, False), (512, 1024, 3, False, True)):
                layers = [ConvBnAct(cin, cout, 3, 2)] + ([SPP(cout)] if spp else [])
                stages.append(nn.Sequential(*layers, CSP(cout, cout, n, shortcut, cspnext=True)))
            self.stages = nn.Sequential(*stages)
            self.final = nn.Conv2d(1024, 133, 7, padding=3)
            self.mlp = nn.Sequential(nn.LayerNorm(12 * 9), nn.Linear(12 * 9, 256, bias=False))
            self.uv = nn.Linear(256, 2 * 512 + 128, bias=False)
            self.gamma = nn.Parameter(torch.randn(2, 128))
            self.o = nn.Linear(512, 256, bias=False)
            self.cls_x, self.cls_y = nn.Linear(256, 576, bias=False), nn.Linear(256, 768, bias=False)

        def forward(self, x):  # (1, 3, 384, 288)
            f = self.final(self.stages(self.stem(x))).flatten(2)   # (1, 133, 108)
            t = self.mlp(f)                                        # (1, 133, 256)
            u, v, base = torch.split(torch.nn.functional.silu(self.uv(t)), [512, 512, 128], -1)
            q, k = base * self.gamma[0], base * self.gamma[1]
            attn = torch.relu(q @ k.transpose(1, 2) / 128 ** 0.5) ** 2
            t = t + self.o(u * (attn @ v))
            return self.cls_x(t), self.cls_y(t)

    return YoloxL().eval(), RTMPoseL().eval()


def random_detector(directory: str, **kwargs):
    """A `DWPoseDetector` over the random-weight stand-ins written to `directory` (kwargs: device, threads)."""
    import warnings

    from steadydancer.pose.detector import DWPoseDetector

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det_path, pose_path = export_models(directory)
    return DWPoseDetector(det_path, pose_path, **kwargs)


def export_models(directory: str) -> tuple[str, str]:
    """Writes random-weight ``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx`` stand-ins."""
    import torch

    yolox, rtmpose = _models()
    det_path = os.path.join(directory, "yolox_l.onnx")
    pose_path = os.path.join(directory, "dw-ll_ucoco_384.onnx")
    with torch.no_grad():
        torch.onnx.export(yolox, (torch.zeros(1, 3, 640, 640),), det_path, input_names=["images"],
                          output_names=["output"], dynamo=False)
        torch.onnx.export(rtmpose, (torch.zeros(1, 3, 384, 288),), pose_path, input_names=["input"],
                          output_names=["simcc_x", "simcc_y"], dynamo=False)
    return det_path, pose_path


def main(argv=None) -> None:
    from steadydancer.pose.detector import letterbox, resize_for_detection

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as d:
        det = random_detector(d, device=args.device, threads=args.threads)
        rng = np.random.default_rng(0)
        frame = rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
        det(frame)  # warm-up
        stages = {"resize": 0.0, "yolox": 0.0, "rtmpose": 0.0, "total": 0.0}
        for _ in range(args.frames):
            t0 = time.perf_counter()
            small = resize_for_detection(frame)
            t1 = time.perf_counter()
            tensor, _ = letterbox(np.ascontiguousarray(small[..., ::-1]), det.det_input_hw)
            det.det_session.run(None, {det.det_session.get_inputs()[0].name: tensor})
            t2 = time.perf_counter()
            det.estimate_keypoints(small, np.array([0, 0, small.shape[1], small.shape[0]], dtype=np.float64))
            t3 = time.perf_counter()
            det(frame)
            t4 = time.perf_counter()
            for k, v in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                stages[k] += v
        print(f"providers={det.providers} threads={args.threads or 'default'} cpus={os.cpu_count()} "
              f"frame={args.width}x{args.height}")
        for k, v in stages.items():
            print(f"  {k:8s} {1000 * v / args.frames:8.1f} ms/frame")


if __name__ == "__main__":
    main()
