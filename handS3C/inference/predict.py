"""``hands3c predict``'s logic: pictures -> crops -> batched model -> camera fit -> files.

Crops follow training (:mod:`handS3C.data.augment`): the hand box (x, y, w, h) in the picture's
pixels is made square with side 1.5 * max(w, h) around its centre and warped to S x S with
OpenCV (the same decoding and ``warpAffine`` as the dataset readers).  Without a box the
picture is taken whole (its bounding square, centred): for pictures that are already hand crops.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .._atomic import atomic_write_bytes
from ..data import augment
from ..data.decode import decode_image, read_image_bytes, warp_crop
from .camera import fit_translation, pinhole, project

__all__ = ["IMAGE_EXTENSIONS", "collect_images", "parse_bbox", "load_bboxes", "prepare_crop", "Prediction",
           "predict_images", "predict_files", "write_obj", "write_json", "write_png", "load_model"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
BOX_EXPANSION = 1.5   # the training crop's expansion of the hand box


# ---- inputs ------------------------------------------------------------------------------------

def collect_images(inputs: Sequence[str]) -> List[str]:
    """Files as given and the pictures (by extension, sorted) of the folders given; output names
    (the file name without extension) must be unique."""
    files: List[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item)
                           if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(item, f)))
            if not found:
                raise FileNotFoundError(f"predict: folder {item!r} holds no pictures ({', '.join(IMAGE_EXTENSIONS)})")
            files.extend(found)
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise FileNotFoundError(f"predict: input {item!r} is neither a file nor a folder")
    names: Dict[str, str] = {}
    for f in files:
        stem = os.path.splitext(os.path.basename(f))[0]
        if stem in names:
            raise ValueError(f"predict: {names[stem]!r} and {f!r} would both write {stem}.obj/.json; rename one")
        names[stem] = f
    return files


def parse_bbox(text) -> np.ndarray:
    """'x,y,w,h' (or a sequence of 4 numbers) -> (4,) float64, w and h positive."""
    try:
        vals = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except (TypeError, ValueError):
        vals = []
    if len(vals) != 4 or not all(np.isfinite(vals)) or vals[2] <= 0 or vals[3] <= 0:
        raise ValueError(f"predict: a box must be x,y,w,h with w, h > 0 (pixels), got {text!r}")
    return np.asarray(vals, dtype=np.float64)


def load_bboxes(path: str) -> Dict[str, np.ndarray]:
    """The --bboxes file: a JSON object {file name or path: [x, y, w, h]}."""
    try:
        with open(path) as fh:
            obj = json.load(fh)
    except json.JSONDecodeError as e:
        raise ValueError(f"predict: --bboxes file {path!r} is not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"predict: --bboxes file {path!r} must hold a JSON object {{name: [x, y, w, h]}}")
    out = {}
    for k, v in obj.items():
        try:
            out[str(k)] = parse_bbox(v)
        except ValueError as e:
            raise ValueError(f"predict: --bboxes file {path!r}, entry {k!r}: {e}") from None
    return out


def _box_for(path: str, bbox, bboxes: Optional[Dict[str, np.ndarray]]):
    if bbox is not None:
        return bbox
    if bboxes:
        for key in (path, os.path.normpath(path), os.path.basename(path)):
            if key in bboxes:
                return bboxes[key]
    return None


@dataclass
class Crop:
    """One picture prepared for the model."""
    path: str
    image: np.ndarray            # (H, W, 3) uint8 RGB, full resolution
    crop: np.ndarray             # (S, S, 3) uint8 RGB
    box: np.ndarray              # (4,) x, y, side, side: the square used, picture pixels
    hand_box: Optional[np.ndarray]  # (4,) the box given (None: whole picture)
    crop_to_image: np.ndarray = field(default=None)  # (2, 3) crop pixel -> picture pixel


def prepare_crop(path: str, input_size: int, hand_box=None) -> Crop:
    """Read ``path`` and cut the model's S x S crop (see the module docstring)."""
    data = read_image_bytes(path)
    image = np.ascontiguousarray(decode_image(data, path)[:, :, ::-1])
    H, W = image.shape[:2]
    if hand_box is None:
        box = augment.square_box(0.0, 0.0, float(W), float(H), 1.0)
    else:
        box = augment.square_box(*[float(v) for v in hand_box], BOX_EXPANSION)
    M, _, side = augment.crop_affine(box, input_size)
    crop, _ = warp_crop(path, M, input_size, side)
    inv = np.linalg.inv(np.vstack([M, [0.0, 0.0, 1.0]]))[:2]
    return Crop(path, image, crop, box, None if hand_box is None else np.asarray(hand_box, dtype=np.float64), inv)


# ---- the model -----------------------------------------------------------------------------------

def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"predict: --device {device!r} is not a torch device ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"predict: --device {device} asked for, but no CUDA device is available")
    return dev


MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


def model_memory_format(model: torch.nn.Module) -> torch.memory_format:
    """``torch.channels_last`` when the model's convolutions are (``load_model`` may make them so),
    else ``torch.contiguous_format``; judged on the first kernel larger than 1x1, whose two
    layouts differ."""
    for p in model.parameters():
        if p.dim() == 4 and p.shape[-1] * p.shape[-2] > 1:
            return torch.channels_last if not p.is_contiguous() else torch.contiguous_format
    return torch.contiguous_format


def load_model(checkpoint: str, mano_model_path: str, input_size: int, backend: str = "auto",
               device: str = "cpu", memory_format: str = "auto"):
    """A HandS3C model in eval mode with the checkpoint's weights and the given MANO file's arrays.

    ``memory_format``: "auto" is ``channels_last`` on CPU, where oneDNN's NHWC convolutions ran
    the full model 1.42x (batch 1) and 1.28x (batch 8) faster than NCHW, same outputs to 1e-7
    (interleaved medians on this project's 2-core machine; ``python -m benchmarks --suites deploy``),
    and the default layout elsewhere; ``predict_images`` feeds the input in the model's layout."""
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"predict: memory_format must be one of {MEMORY_FORMATS}, got {memory_format!r}")
    from .. import HandS3C, load_published_checkpoint

    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"predict: checkpoint {checkpoint!r} does not exist")
    if not os.path.isfile(mano_model_path):
        raise FileNotFoundError(f"predict: MANO model {mano_model_path!r} does not exist")
    model = HandS3C(input_size=input_size, backend=backend, mano_model_path=mano_model_path)
    mano_state = {k: v.clone() for k, v in model.mano_layer.state_dict().items()}
    load_published_checkpoint(model, checkpoint)
    # the MANO file given wins over the arrays a snapshot carries (they are the same for real snapshots)
    model.mano_layer.load_state_dict(mano_state)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    if memory_format == "channels_last" or (memory_format == "auto" and torch.device(dev).type == "cpu"):
        model = model.to(memory_format=torch.channels_last)
    return model


@dataclass
class Prediction:
    """One picture's result; arrays are float64 numpy."""
    path: str
    crop: Crop
    joints2d_px: np.ndarray      # (21, 2) picture pixels
    joints3d: np.ndarray         # (21, 3) metres, the model's root-relative frame (no translation)
    verts: np.ndarray            # (778, 3) metres, same frame
    pose: np.ndarray             # (48,) MANO axis-angle, root first
    shape: np.ndarray            # (10,)
    K: np.ndarray                # (3, 3) the picture's camera
    cam_t: np.ndarray            # (3,) fitted translation, metres

    @property
    def verts_cam(self) -> np.ndarray:
        return self.verts + self.cam_t

    @property
    def joints3d_cam(self) -> np.ndarray:
        return self.joints3d + self.cam_t


def predict_images(model, crops: Sequence[Crop], batch_size: int = 8, focal: Optional[float] = None,
                   progress: bool = True) -> List[Prediction]:
    """Run ``model`` over the crops in batches and fit each hand's camera translation."""
    from tqdm import tqdm

    dev = next(model.parameters()).device
    layout = model_memory_format(model)
    S = model.input_size
    preds: List[Prediction] = []
    bar = tqdm(total=len(crops), desc="predict", unit="img", disable=not progress, dynamic_ncols=True)
    try:
        for start in range(0, len(crops), batch_size):
            chunk = crops[start:start + batch_size]
            x = torch.from_numpy(np.stack([c.crop for c in chunk])).to(dev).permute(0, 3, 1, 2).float() / 255.0
            with torch.inference_mode():
                out = model(x.contiguous(memory_format=layout))
            out = {k: v.detach().double().cpu().numpy() for k, v in out.items()}
            for i, c in enumerate(chunk):
                j_crop = out["joints2d"][i] * S                       # crop pixels
                j_img = j_crop @ c.crop_to_image[:, :2].T + c.crop_to_image[:, 2]
                H, W = c.image.shape[:2]
                K = pinhole(float(focal) if focal else float(max(H, W)), W, H)
                t = fit_translation(out["joints3d"][i], j_img, K)
                preds.append(Prediction(c.path, c, j_img, out["joints3d"][i], out["verts"][i], out["pose"][i],
                                        out["shape"][i], K, t))
            bar.update(len(chunk))
    finally:
        bar.close()
    return preds


# ---- writers (atomic: temp file in the same folder, fsync, rename) ---------------------------------

def write_obj(path: str, verts: np.ndarray, faces: np.ndarray) -> None:
    """Wavefront OBJ: ``v x y z`` (metres) per vertex, ``f a b c`` (1-based) per face."""
    lines = ["# HandS3C MANO mesh, metres, camera frame (x right, y down, z forward)"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in np.asarray(verts, dtype=np.float64)]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in np.asarray(faces, dtype=np.int64)]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def prediction_record(p: Prediction) -> dict:
    """The JSON record of one prediction (plain lists of floats)."""
    H, W = p.crop.image.shape[:2]
    r = lambda a: np.round(np.asarray(a, dtype=np.float64), 7).tolist()  # noqa: E731
    return {
        "image": p.path, "image_size": [W, H],
        "bbox": None if p.crop.hand_box is None else r(p.crop.hand_box),
        "crop_box": r(p.crop.box), "crop_to_image": r(p.crop.crop_to_image),
        "joints2d": r(p.joints2d_px),
        "joints3d": r(p.joints3d), "verts": r(p.verts),
        "cam_t": r(p.cam_t), "joints3d_cam": r(p.joints3d_cam), "verts_cam": r(p.verts_cam),
        "K": r(p.K), "pose": r(p.pose), "shape": r(p.shape),
        "reprojection_error_px": float(np.linalg.norm(project(p.K, p.joints3d_cam) - p.joints2d_px, axis=1).mean()),
        "units": {"joints2d": "picture pixels (x right, y down), FreiHAND joint order",
                  "joints3d, verts": "metres, model frame (root-relative MANO, no translation)",
                  "joints3d_cam, verts_cam": "metres, camera frame: joints3d/verts + cam_t, camera K",
                  "pose": "MANO axis-angle (48, root first)", "shape": "MANO betas (10)"},
    }


def write_json(path: str, record: dict) -> None:
    atomic_write_bytes(path, json.dumps(record, indent=1).encode())


def write_png(path: str, rgb: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise RuntimeError(f"predict: PNG encoding failed for {path!r}")
    atomic_write_bytes(path, buf.tobytes())


def write_prediction(p: Prediction, faces: np.ndarray, out_dir: str, overlay: bool = True) -> List[str]:
    """Write ``<name>.obj``, ``<name>.json`` and (``overlay``) ``<name>_overlay.png``; returns the paths."""
    stem = os.path.splitext(os.path.basename(p.path))[0]
    paths = [os.path.join(out_dir, stem + ".obj"), os.path.join(out_dir, stem + ".json")]
    write_obj(paths[0], p.verts_cam, faces)
    write_json(paths[1], prediction_record(p))
    if overlay:
        from .overlay import render_overlay

        picture, _, _ = render_overlay(p.crop.image, p.verts_cam, faces, p.K, p.joints2d_px)
        paths.append(os.path.join(out_dir, stem + "_overlay.png"))
        write_png(paths[-1], picture)
    return paths


def predict_files(inputs: Sequence[str], checkpoint: str, mano_model_path: str, out_dir: str, bbox=None,
                  bboxes_file: Optional[str] = None, input_size: int = 256, backend: str = "auto",
                  device: str = "auto", batch_size: int = 8, focal: Optional[float] = None,
                  overlay: bool = True, progress: bool = True, memory_format: str = "auto") -> List[str]:
    """The whole command: returns the paths written."""
    files = collect_images(inputs)
    box = parse_bbox(bbox) if bbox is not None else None
    boxes = load_bboxes(bboxes_file) if bboxes_file else None
    model = load_model(checkpoint, mano_model_path, input_size, backend=backend, device=device,
                       memory_format=memory_format)
    os.makedirs(out_dir, exist_ok=True)
    faces = model.mano_layer.th_faces.cpu().numpy()
    written: List[str] = []
    from tqdm import tqdm

    # crops are prepared one batch at a time so a large folder never sits in memory at once
    with tqdm(total=len(files), desc="predict", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(files), batch_size):
            crops = [prepare_crop(f, input_size, _box_for(f, box, boxes)) for f in files[start:start + batch_size]]
            for p in predict_images(model, crops, batch_size=batch_size, focal=focal, progress=False):
                written.extend(write_prediction(p, faces, out_dir, overlay=overlay))
            bar.update(len(crops))
    return written
