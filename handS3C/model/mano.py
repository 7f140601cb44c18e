"""The MANO hand model (right hand) as used by HandS3C, and a chumpy-free MANO pickle loader.

:class:`ManoLayer` computes linear blend skinning exactly as the published model's MANO
layer is configured: right hand, full 45-D articulation (no PCA), ``flat_hand_mean=False``
(the pickle's ``hands_mean`` is added to the 45 articulation values), root orientation
included, no translation.  Outputs are in the MANO file's units (metres for the official
files; the published code multiplies by 1000 and divides by 1000 again, which is the
identity).  Its nine buffers carry the published names and shapes, so the MANO arrays stored
in published checkpoints load into it.

:func:`load_mano_pickle` reads the official ``MANO_RIGHT.pkl`` (a Python-2 pickle holding
numpy arrays, a scipy CSC matrix and chumpy objects) **without** chumpy or scipy and
**without** executing arbitrary code: a restricted unpickler allows only numpy's array
reconstruction and stand-ins for the chumpy / scipy.sparse classes, and refuses every other
global with a :class:`pickle.UnpicklingError` naming it.
"""
from __future__ import annotations

import os
import pickle
import warnings
from typing import Any, Dict, Optional, Union

import numpy as np
import torch
import torch.nn as nn

from .rotations import axis_angle_to_matrix

__all__ = [
    "ManoLayer",
    "load_mano_pickle",
    "MANO_PARENTS",
    "FINGERTIP_VERTICES",
    "FREIHAND_ORDER",
    "NUM_VERTS",
    "NUM_FACES",
]

NUM_VERTS = 778
NUM_FACES = 1538
NUM_JOINTS = 16
NUM_BETAS = 10
NUM_PCA_KEPT = 6  # the published loader keeps hands_components[:6] even with PCA off

# MANO skeleton order: 0 wrist, 1-3 index, 4-6 middle, 7-9 pinky, 10-12 ring, 13-15 thumb.
MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
# Right-hand fingertip vertices, in the order thumb, index, middle, ring, pinky.
FINGERTIP_VERTICES = (745, 317, 444, 556, 673)
# Index into cat(16 MANO joints, 5 tips) giving FreiHAND order:
# wrist, thumb 1-4, index 1-4, middle 1-4, ring 1-4, pinky 1-4.
FREIHAND_ORDER = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)


# ---------------------------------------------------------------------------------------
# Restricted unpickling of MANO_*.pkl
# ---------------------------------------------------------------------------------------

class _ChumpyStandIn:
    """Stand-in for any chumpy class: keeps the pickled state, rebuilds the array from it.

    chumpy objects pickle as ``class + state dict`` (their ``__getstate__`` is ``__dict__``
    minus caches).  A leaf ``Ch`` holds its value under ``'x'``; a few structural chumpy
    operators (transpose / reshape / select / ravel) hold their operand under ``'a'``.
    """

    _chumpy_name = "chumpy.ch.Ch"

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = {**state[0], **(state[1] or {})}
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(
                f"chumpy object {self._chumpy_name}: expected a dict as pickled state, got {type(state).__name__}")
        self.__dict__["_state"] = state

    def to_array(self) -> np.ndarray:
        st = self.__dict__.get("_state", {})
        name = self._chumpy_name.rsplit(".", 1)[-1]
        if "x" in st:
            return _as_array(st["x"], self._chumpy_name)
        if "a" in st:
            a = _as_array(st["a"], self._chumpy_name)
            if name == "transpose":
                return np.transpose(a, st.get("axes"))
            if name in ("Reshape", "reshape"):
                return np.reshape(a, st["newshape"])
            if name == "Select":
                return a.ravel()[np.asarray(st["idxs"])]
            if name == "ravel":
                return a.ravel()
            if name in ("Ch",):
                return a
        raise pickle.UnpicklingError(
            f"cannot rebuild chumpy object {self._chumpy_name} without chumpy: its pickled state has keys "
            f"{sorted(st)} (supported: a leaf Ch with 'x', or transpose/Reshape/Select/ravel of 'a')")


class _SparseStandIn:
    """Stand-in for scipy.sparse CSC/CSR matrices: rebuilds a dense array from the state."""

    _sparse_name = "scipy.sparse.csc_matrix"
    _compressed_axis = 1  # CSC: indptr runs over columns

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = {**state[0], **(state[1] or {})}
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(
                f"{self._sparse_name}: expected a dict as pickled state, got {type(state).__name__}")
        self.__dict__["_state"] = state

    def to_array(self) -> np.ndarray:
        st = self.__dict__.get("_state", {})
        for k in ("data", "indices", "indptr"):
            if k not in st:
                raise pickle.UnpicklingError(f"{self._sparse_name}: pickled state lacks {k!r} (keys {sorted(st)})")
        shape = st.get("_shape", st.get("shape"))
        if shape is None:
            raise pickle.UnpicklingError(f"{self._sparse_name}: pickled state lacks its shape (keys {sorted(st)})")
        shape = tuple(int(s) for s in shape)
        data = np.asarray(st["data"])
        indices = np.asarray(st["indices"]).astype(np.int64)
        indptr = np.asarray(st["indptr"]).astype(np.int64)
        n_major = shape[self._compressed_axis]
        if len(shape) != 2 or indptr.shape != (n_major + 1,) or indices.shape != data.shape \
                or (indptr[-1] != data.size) or np.any(np.diff(indptr) < 0):
            raise pickle.UnpicklingError(f"{self._sparse_name}: inconsistent data/indices/indptr for shape {shape}")
        minor = shape[1 - self._compressed_axis]
        if indices.size and (indices.min() < 0 or indices.max() >= minor):
            raise pickle.UnpicklingError(f"{self._sparse_name}: index out of range for shape {shape}")
        dense = np.zeros(shape, dtype=data.dtype if data.size else np.float64)
        major = np.repeat(np.arange(n_major), np.diff(indptr))
        if self._compressed_axis == 1:
            np.add.at(dense, (indices, major), data)
        else:
            np.add.at(dense, (major, indices), data)
        return dense


class _CsrStandIn(_SparseStandIn):
    _sparse_name = "scipy.sparse.csr_matrix"
    _compressed_axis = 0


def _as_array(v, what: str) -> np.ndarray:
    if isinstance(v, (_ChumpyStandIn, _SparseStandIn)):
        return v.to_array()
    if isinstance(v, np.ndarray):
        return v
    try:
        return np.asarray(v)
    except Exception as e:  # pragma: no cover - defensive
        raise pickle.UnpicklingError(f"{what}: cannot convert {type(v).__name__} to an array: {e}") from e


def _safe_reconstructor(cls, base, state):
    """``copy_reg._reconstructor`` limited to classes the unpickler itself allowed."""
    if not isinstance(cls, type) or not (issubclass(cls, (_ChumpyStandIn, _SparseStandIn)) or cls is object):
        raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r}")
    if base is not object:
        raise pickle.UnpicklingError(f"refusing copy_reg reconstruction with base {base!r}")
    return object.__new__(cls)


def _make_chumpy(qualname: str):
    return type("Chumpy_" + qualname.replace(".", "_"), (_ChumpyStandIn,), {"_chumpy_name": qualname})


def _make_sparse(qualname: str, csr: bool):
    base = _CsrStandIn if csr else _SparseStandIn
    return type("Sparse_" + qualname.replace(".", "_"), (base,), {"_sparse_name": qualname})


_NUMPY_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}
# Python-2 protocol-2 pickles name a few builtins as globals (chumpy's state holds sets).
_SAFE_BUILTINS = {"object": object, "set": set, "frozenset": frozenset, "slice": slice, "complex": complex}
_CHUMPY_MODULES = ("chumpy.ch", "chumpy.reordering", "chumpy.ch_ops", "chumpy.utils", "chumpy.logic",
                   "chumpy.linalg", "chumpy")
_SPARSE_MODULES = ("scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr", "scipy.sparse._csr",
                   "scipy.sparse.compressed", "scipy.sparse._compressed", "scipy.sparse")


def _numpy_global(name: str):
    """numpy's pickle helpers, resolved for numpy 1.x (numpy.core) and 2.x (numpy._core)."""
    if name == "ndarray":
        return np.ndarray
    if name == "dtype":
        return np.dtype
    import importlib
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray") if name != "_frombuffer" else \
            ("numpy._core.numeric", "numpy.core.numeric"):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy.{name} is not available in this numpy")  # pragma: no cover


def _latin1_encode(obj, encoding="latin1"):
    """``_codecs.encode`` as Python-3 protocol-2 pickles use it for bytes: str -> bytes only."""
    if not isinstance(obj, str) or encoding.lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode({type(obj).__name__}, {encoding!r})")
    return obj.encode("latin1")


class _RestrictedManoUnpickler(pickle.Unpickler):
    """Unpickler for MANO files: numpy arrays, chumpy / scipy.sparse stand-ins, nothing else."""

    _cache: Dict[tuple, Any] = {}

    def find_class(self, module: str, name: str):
        key = (module, name)
        if key in _NUMPY_ALLOWED:
            return _numpy_global(name)
        if key == ("_codecs", "encode"):
            return _latin1_encode
        if key in (("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor")):
            return _safe_reconstructor
        if module in ("__builtin__", "builtins") and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        if module in _CHUMPY_MODULES or module.startswith("chumpy."):
            qual = f"{module}.{name}"
            if key not in self._cache:
                self._cache[key] = _make_chumpy(qual)
            return self._cache[key]
        if module in _SPARSE_MODULES and name in ("csc_matrix", "csr_matrix"):
            if key not in self._cache:
                self._cache[key] = _make_sparse(f"{module}.{name}", csr=(name == "csr_matrix"))
            return self._cache[key]
        raise pickle.UnpicklingError(
            f"MANO pickle loader: refusing to load global {module}.{name} (only numpy arrays, chumpy "
            "arrays and scipy.sparse CSC/CSR matrices are allowed in a MANO model file)")


# Expected fields: name -> (shape or None for "any", description)
_REQUIRED_FIELDS = {
    "v_template": ((NUM_VERTS, 3), "template vertices"),
    "shapedirs": ((NUM_VERTS, 3, NUM_BETAS), "shape blend shapes"),
    "posedirs": ((NUM_VERTS, 3, 135), "pose blend shapes"),
    "J_regressor": ((NUM_JOINTS, NUM_VERTS), "joint regressor"),
    "weights": ((NUM_VERTS, NUM_JOINTS), "skinning weights"),
    "f": ((NUM_FACES, 3), "faces"),
    "kintree_table": ((2, NUM_JOINTS), "kinematic tree"),
    "hands_components": ((None, 45), "PCA pose components"),
    "hands_mean": ((45,), "mean articulation"),
}


def load_mano_pickle(path: Union[str, os.PathLike]) -> Dict[str, np.ndarray]:
    """Read a MANO model pickle (e.g. the official ``MANO_RIGHT.pkl``) into plain numpy arrays.

    Returns a dict with float64 arrays ``v_template`` (778, 3), ``shapedirs`` (778, 3, 10),
    ``posedirs`` (778, 3, 135), dense ``J_regressor`` (16, 778), ``weights`` (778, 16),
    ``hands_components`` (>=6, 45), ``hands_mean`` (45,), an int64 ``f`` (1538, 3) and an int64
    ``kintree_table`` (2, 16) (the root's parent, stored as 2**32 - 1, becomes -1).

    Raises ``FileNotFoundError`` (missing file), ``pickle.UnpicklingError`` (a global other
    than numpy / chumpy / scipy.sparse matrices, e.g. ``os.system``, or an unreadable pickle)
    or ``ValueError`` (a missing or mis-shaped field); every message names the path.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MANO model file not found: {path!r} (expected the official MANO_RIGHT.pkl)")
    try:
        with open(path, "rb") as fh:
            raw = _RestrictedManoUnpickler(fh, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise pickle.UnpicklingError(f"{path}: {e}") from e
    except Exception as e:
        raise pickle.UnpicklingError(
            f"{path}: not a readable MANO model pickle ({type(e).__name__}: {e})") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a pickled dict of MANO fields, got {type(raw).__name__}")
    out: Dict[str, np.ndarray] = {}
    for name, (shape, desc) in _REQUIRED_FIELDS.items():
        if name not in raw:
            raise ValueError(f"{path}: MANO field {name!r} ({desc}) is missing; fields present: {sorted(raw)}")
        try:
            arr = np.asarray(_as_array(raw[name], name))
        except pickle.UnpicklingError as e:
            raise ValueError(f"{path}: MANO field {name!r}: {e}") from e
        ok = arr.ndim == len(shape) and all(s is None or s == a for s, a in zip(shape, arr.shape))
        if not ok:
            want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{path}: MANO field {name!r} ({desc}) must have shape {want}, got {arr.shape}")
        if not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{path}: MANO field {name!r} must be numeric, got dtype {arr.dtype}")
        if name in ("f", "kintree_table"):
            arr = arr.astype(np.int64)
            if name == "kintree_table":
                arr = np.where(arr == 2 ** 32 - 1, -1, arr)
        else:
            arr = arr.astype(np.float64)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{path}: MANO field {name!r} contains non-finite values")
        out[name] = arr
    if out["hands_components"].shape[0] < NUM_PCA_KEPT:
        raise ValueError(f"{path}: MANO field 'hands_components' needs at least {NUM_PCA_KEPT} rows, "
                         f"got {out['hands_components'].shape}")
    if out["f"].min() < 0 or out["f"].max() >= NUM_VERTS:
        raise ValueError(f"{path}: MANO field 'f' has vertex indices outside 0..{NUM_VERTS - 1}")
    parents = tuple(int(p) for p in out["kintree_table"][0])
    if parents[1:] != MANO_PARENTS[1:] or tuple(out["kintree_table"][1]) != tuple(range(NUM_JOINTS)):
        raise ValueError(f"{path}: MANO kinematic tree {out['kintree_table'].tolist()} differs from the MANO hand "
                         f"skeleton (parents {list(MANO_PARENTS)})")
    if "betas" in raw:
        betas = np.asarray(_as_array(raw["betas"], "betas"), dtype=np.float64).reshape(-1)
        if betas.shape != (NUM_BETAS,):
            raise ValueError(f"{path}: MANO field 'betas' must have {NUM_BETAS} values, got {betas.shape}")
        out["betas"] = betas
    return out


# ---------------------------------------------------------------------------------------
# The layer
# ---------------------------------------------------------------------------------------

class ManoLayer(nn.Module):
    """MANO right hand: (pose, shape) -> (vertices, 21 joints), in metres.

    Args:
        mano_model_path: path to ``MANO_RIGHT.pkl`` (official format, read by
            :func:`load_mano_pickle`), or ``None`` for placeholder buffers (zeros) of the right
            shapes.  With placeholders the layer runs but its outputs are meaningless (all
            zero) until real MANO arrays are loaded, e.g. from a published checkpoint, which
            stores them (``is_placeholder`` then becomes ``False``).
        warn: emit a ``UserWarning`` when building placeholders.

    Buffers (published names; float32 unless stated): ``th_betas`` (1, 10), ``th_shapedirs``
    (778, 3, 10), ``th_posedirs`` (778, 3, 135), ``th_v_template`` (1, 778, 3),
    ``th_J_regressor`` (16, 778) dense, ``th_weights`` (778, 16), ``th_faces`` (1538, 3) int64,
    ``th_hands_mean`` (1, 45), ``th_selected_comps`` (6, 45) (unused: PCA is off).
    """

    def __init__(self, mano_model_path: Optional[Union[str, os.PathLike]] = None, warn: bool = True):
        super().__init__()
        if mano_model_path is None:
            data = None
            self.is_placeholder = True
            if warn:
                warnings.warn("ManoLayer built without a MANO model file: placeholder (zero) buffers, outputs are "
                              "meaningless until real MANO arrays are loaded (pass mano_model_path=<MANO_RIGHT.pkl> "
                              "or load a checkpoint that stores them)", UserWarning, stacklevel=2)
        else:
            data = load_mano_pickle(mano_model_path)
            self.is_placeholder = False

        def f32(name, shape, fn=lambda a: a):
            if data is None:
                return torch.zeros(shape, dtype=torch.float32)
            return torch.as_tensor(fn(data[name]), dtype=torch.float32).reshape(shape)

        self.register_buffer("th_betas", f32("betas", (1, NUM_BETAS)) if data is not None and "betas" in data
                             else torch.zeros(1, NUM_BETAS))
        self.register_buffer("th_shapedirs", f32("shapedirs", (NUM_VERTS, 3, NUM_BETAS)))
        self.register_buffer("th_posedirs", f32("posedirs", (NUM_VERTS, 3, 135)))
        self.register_buffer("th_v_template", f32("v_template", (1, NUM_VERTS, 3)))
        self.register_buffer("th_J_regressor", f32("J_regressor", (NUM_JOINTS, NUM_VERTS)))
        self.register_buffer("th_weights", f32("weights", (NUM_VERTS, NUM_JOINTS)))
        faces = (torch.zeros(NUM_FACES, 3, dtype=torch.int64) if data is None
                 else torch.as_tensor(data["f"], dtype=torch.int64))
        self.register_buffer("th_faces", faces)
        self.register_buffer("th_hands_mean", f32("hands_mean", (1, 45)))
        self.register_buffer("th_selected_comps",
                             f32("hands_components", (NUM_PCA_KEPT, 45), lambda a: a[:NUM_PCA_KEPT]))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "th_v_template" in state_dict:
            self.is_placeholder = False
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def shape_and_skeleton(self, betas: Optional[torch.Tensor] = None):
        """Shaped rest mesh and its skeleton: betas (B, 10) -> (v_shaped (B, 778, 3), joints (B, 16, 3))."""
        if betas is None:
            betas = self.th_betas
        betas = betas.to(self.th_shapedirs.dtype)
        v_shaped = torch.einsum("vck,bk->bvc", self.th_shapedirs, betas) + self.th_v_template
        joints = torch.einsum("jv,bvc->bjc", self.th_J_regressor, v_shaped)
        return v_shaped, joints

    def forward(self, pose: torch.Tensor, betas: Optional[torch.Tensor] = None, return_skeleton: bool = False):
        """Pose and shape the hand.

        Args:
            pose: (B, 48) axis-angle: root orientation (3) then the 15 articulation rotations;
                ``th_hands_mean`` is added to the articulation (``flat_hand_mean=False``).
            betas: (B, 10) shape coefficients, or ``None`` for ``th_betas``.
            return_skeleton: also return the 16 posed skeleton joints in MANO order.

        Returns:
            ``verts`` (B, 778, 3) and ``joints`` (B, 21, 3) in FreiHAND order (16 skeleton
            joints + 5 fingertip vertices), float32 (float64 if the layer was cast to
            float64), in metres; plus ``skeleton`` (B, 16, 3) if asked.  Autocast is disabled
            inside: the layer always computes in its buffers' dtype.
        """
        if pose.dim() != 2 or pose.shape[1] != 3 * NUM_JOINTS:
            raise ValueError(f"ManoLayer: pose must have shape (B, 48), got {tuple(pose.shape)}")
        if betas is not None and (betas.dim() != 2 or betas.shape != (pose.shape[0], NUM_BETAS)):
            raise ValueError(f"ManoLayer: betas must have shape (B={pose.shape[0]}, {NUM_BETAS}), got "
                             f"{tuple(betas.shape)}")
        dtype = self.th_v_template.dtype
        with torch.autocast(device_type=pose.device.type, enabled=False):
            pose = pose.to(dtype)
            if betas is None:
                betas = self.th_betas.expand(pose.shape[0], -1)
            Bn = pose.shape[0]
            full_pose = torch.cat([pose[:, :3], pose[:, 3:] + self.th_hands_mean], dim=1)
            rots = axis_angle_to_matrix(full_pose.reshape(Bn, NUM_JOINTS, 3)).to(dtype)   # (B, 16, 3, 3)
            v_shaped, J = self.shape_and_skeleton(betas.to(dtype))
            eye = torch.eye(3, dtype=dtype, device=pose.device)
            pose_feat = (rots[:, 1:] - eye).reshape(Bn, 135)
            v_posed = v_shaped + torch.einsum("vck,bk->bvc", self.th_posedirs, pose_feat)

            # Kinematic chain: global rotation and translation of every joint.
            G_R = [rots[:, 0]]
            G_t = [J[:, 0]]
            for j in range(1, NUM_JOINTS):
                p = MANO_PARENTS[j]
                G_R.append(G_R[p] @ rots[:, j])
                G_t.append(G_t[p] + (G_R[p] @ (J[:, j] - J[:, p]).unsqueeze(-1)).squeeze(-1))
            G_R = torch.stack(G_R, dim=1)                      # (B, 16, 3, 3)
            G_t = torch.stack(G_t, dim=1)                      # (B, 16, 3): posed joint positions
            # Skinning transform of each joint maps rest-pose points: x -> G_R x + (G_t - G_R J)
            skin_t = G_t - (G_R @ J.unsqueeze(-1)).squeeze(-1)
            W = self.th_weights
            T_R = torch.einsum("vj,bjcd->bvcd", W, G_R)        # (B, 778, 3, 3)
            T_t = torch.einsum("vj,bjc->bvc", W, skin_t)       # (B, 778, 3)
            verts = (T_R @ v_posed.unsqueeze(-1)).squeeze(-1) + T_t
            tips = verts[:, list(FINGERTIP_VERTICES)]
            joints = torch.cat([G_t, tips], dim=1)[:, list(FREIHAND_ORDER)]
        if return_skeleton:
            return verts, joints, G_t
        return verts, joints

    def extra_repr(self) -> str:
        return "side='right', flat_hand_mean=False, use_pca=False" + (", placeholder=True" if self.is_placeholder else "")
