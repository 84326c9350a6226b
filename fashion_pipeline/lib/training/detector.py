"""The champion detector at serving time: the exported ONNX graph run with onnxruntime, no torch needed.

The letterbox and non-maximum suppression are done here, in numpy, the way ultralytics does them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ONNX_FILE = "detector.onnx"
LETTERBOX_COLOUR = 114  # ultralytics pads with this grey


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the input image
    category: str
    score: float


def letterbox(image: Image.Image, size: int) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Scale to fit `size` x `size` keeping the aspect ratio, pad with grey, centred (as ultralytics does).

    Returns the (1, 3, size, size) float32 input in [0, 1], the scale and the (left, top) padding.
    """
    import cv2

    rgb = np.asarray(image.convert("RGB"))
    height, width = rgb.shape[:2]
    scale = min(size / height, size / width)
    new_width, new_height = round(width * scale), round(height * scale)
    if (new_width, new_height) != (width, height):
        # ultralytics' validation loader shrinks with INTER_AREA and enlarges with INTER_LINEAR.
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (new_width, new_height), interpolation=interpolation)
    left = (size - new_width) / 2
    top = (size - new_height) / 2
    canvas = np.full((size, size, 3), LETTERBOX_COLOUR, np.uint8)
    x0, y0 = round(left - 0.1), round(top - 0.1)
    canvas[y0 : y0 + new_height, x0 : x0 + new_width] = rgb
    tensor = canvas.transpose(2, 0, 1)[None].astype(np.float32) / 255.0  # (1, 3, H, W)
    return tensor, scale, (x0, y0)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, best score first; boxes (N, 4) as x1, y1, x2, y2."""
    order = np.argsort(-scores)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        x1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        overlap = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        union = areas[best] + areas[rest] - overlap
        order = rest[overlap / np.maximum(union, 1e-9) <= iou]
    return np.asarray(keep, dtype=np.int64)


class GarmentDetector:
    """The champion detector as an ONNX Runtime session: one image in, garment boxes out."""

    def __init__(self, model_path: Path, metadata: dict[str, Any], threads: int = 1) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One thread is the fastest for yolo11n on 2 shared cores (STACK.md trap 12).
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self.version: int = int(metadata.get("registered_version", 0))
        self.classes: tuple[str, ...] = tuple(metadata["classes"])
        self.input_size: int = int(metadata["input_size"])
        self.metadata = metadata

    def detect(
        self, image: Image.Image, conf: float = 0.25, iou: float = 0.7, max_detections: int = 100
    ) -> list[Detection]:
        """Garments in `image` with score >= conf, best first; NMS per class at `iou`."""
        tensor, scale, (left, top) = letterbox(image, self.input_size)
        output = self._session.run(None, {self._input: tensor})[0][0]  # (4 + n_classes, anchors)
        class_scores = output[4:]
        classes = class_scores.argmax(axis=0)
        scores = class_scores[classes, np.arange(class_scores.shape[1])]
        candidates = scores >= conf
        if not candidates.any():
            return []
        xc, yc, w, h = output[:4, candidates]
        boxes = np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1)
        scores, classes = scores[candidates], classes[candidates]
        # Offsetting boxes by class id makes one NMS call per-class (boxes of different classes never overlap).
        kept = non_max_suppression(boxes + classes[:, None] * 4096.0, scores, iou)[:max_detections]
        width, height = image.size
        detections = []
        for i in kept:
            x1, y1, x2, y2 = boxes[i]
            detections.append(
                Detection(
                    box=(
                        float(np.clip((x1 - left) / scale, 0, width)),
                        float(np.clip((y1 - top) / scale, 0, height)),
                        float(np.clip((x2 - left) / scale, 0, width)),
                        float(np.clip((y2 - top) / scale, 0, height)),
                    ),
                    category=self.classes[int(classes[i])],
                    score=float(scores[i]),
                )
            )
        return detections


def load_detector(model_dir: Path, threads: int = 1) -> GarmentDetector:
    """Load the detector saved in `model_dir` (detector.onnx + metadata.json); no torch needed."""
    model_dir = Path(model_dir)
    metadata_file = model_dir / "metadata.json"
    if not metadata_file.exists():
        raise FileNotFoundError(
            f"{metadata_file} does not exist: materialize the garment_detector asset (it publishes the "
            "champion model there)"
        )
    metadata = json.loads(metadata_file.read_text())
    return GarmentDetector(model_dir / metadata.get("model_file", ONNX_FILE), metadata, threads=threads)
