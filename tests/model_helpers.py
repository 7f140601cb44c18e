"""Helpers shared by the full-model tests (MANO, model, checkpoint, parity).

* :func:`write_fake_mano` writes a synthetic MANO pickle with the real field names, types and
  shapes (``fake_mano_structure.json``): float64 arrays, a scipy CSC ``J_regressor``, uint32
  faces, the MANO kinematic tree; optionally ``shapedirs`` as a chumpy ``Ch`` object (a
  stand-in class that pickles under the name ``chumpy.ch.Ch``, so the loader's chumpy path
  runs without chumpy installed).  Values are random but plausible (template ~10 cm, convex
  regressor and skinning weights), never zero.
* :func:`fast_selective_scan_ref` is mamba-ssm's ``selective_scan_ref`` transcribed so that
  autograd's backward is O(L): the per-step tensors are taken with ``unbind`` (whose backward
  is one ``stack``) instead of ``t[:, :, i]`` (whose backward materialises a full-size
  gradient per step, O(L^2), SPEC §5).  Same float32 arithmetic per step.
"""
from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F

MANO_PARENTS = [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]


def fake_mano_dict(seed: int = 0):
    """Random MANO fields (numpy / scipy), realistic structure; J_regressor a CSC matrix."""
    import scipy.sparse

    rng = np.random.default_rng(seed)
    V, J = 778, 16
    v_template = rng.normal(0.0, 0.04, size=(V, 3))
    shapedirs = rng.normal(0.0, 2e-3, size=(V, 3, 10))
    posedirs = rng.normal(0.0, 2e-3, size=(V, 3, 135))
    # each joint a convex combination of 12 vertices
    jr = np.zeros((J, V))
    for j in range(J):
        idx = rng.choice(V, size=12, replace=False)
        w = rng.uniform(0.2, 1.0, size=12)
        jr[j, idx] = w / w.sum()
    weights = rng.uniform(0.0, 1.0, size=(V, J)) ** 4
    weights /= weights.sum(1, keepdims=True)
    kintree = np.array([[4294967295] + MANO_PARENTS[1:], list(range(J))], dtype=np.int64)
    return {
        "hands_components": rng.normal(0.0, 0.3, size=(45, 45)),
        "f": rng.integers(0, V, size=(1538, 3)).astype(np.uint32),
        "J_regressor": scipy.sparse.csc_matrix(jr),
        "kintree_table": kintree,
        "J": jr @ v_template,
        "bs_style": "lbs",
        "hands_coeffs": rng.normal(0.0, 0.5, size=(1554, 45)),
        "weights": weights,
        "posedirs": posedirs,
        "hands_mean": rng.normal(0.0, 0.2, size=(45,)),
        "v_template": v_template,
        "shapedirs": shapedirs,
        "bs_type": "lrotmin",
    }


class _FakeCh:
    """Pickles like a chumpy leaf ``Ch``: class ``chumpy.ch.Ch`` + state dict with ``x``."""

    def __init__(self, x):
        self.x = x
        self._dirty_vars = set()

    def __getstate__(self):
        return {"x": self.x, "_dirty_vars": set(), "_itr": None, "dterms": ("x",)}


def write_fake_mano(path, seed: int = 0, chumpy: bool = False, extra=None, drop=None):
    """Write a synthetic MANO pickle (protocol 2) to ``path``; returns the numpy fields.

    chumpy: store ``shapedirs`` and ``v_template`` as chumpy-named objects.
    extra: dict of additional fields to store as-is.  drop: a field name to leave out.
    """
    d = fake_mano_dict(seed)
    to_pickle = dict(d)
    if drop is not None:
        to_pickle.pop(drop)
    if extra:
        to_pickle.update(extra)
    added = []
    try:
        if chumpy:
            for name in ("chumpy", "chumpy.ch"):
                if name not in sys.modules:
                    sys.modules[name] = types.ModuleType(name)
                    added.append(name)
            _FakeCh.__module__ = "chumpy.ch"
            _FakeCh.__qualname__ = _FakeCh.__name__ = "Ch"
            sys.modules["chumpy.ch"].Ch = _FakeCh
            sys.modules["chumpy"].ch = sys.modules["chumpy.ch"]
            for name in ("shapedirs", "v_template"):
                if name in to_pickle:
                    to_pickle[name] = _FakeCh(to_pickle[name])
        with open(path, "wb") as fh:
            pickle.dump(to_pickle, fh, protocol=2)
    finally:
        for name in added:
            del sys.modules[name]
        _FakeCh.__module__ = __name__
        _FakeCh.__qualname__ = _FakeCh.__name__ = "_FakeCh"
    if chumpy:
        with open(path, "rb") as fh:
            assert b"chumpy.ch" in fh.read(), "the chumpy stand-in did not pickle under chumpy.ch"
    d["J_regressor_dense"] = d["J_regressor"].toarray()
    return d


def fast_selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                            return_last_state=False):
    """mamba-ssm ``selective_scan_ref`` semantics (real A, B/C grouped (b, G, N, L) or (b, N, L)),
    float32, with an O(L) autograd backward.  Returns ``out`` (b, dim, L) in u's dtype."""
    dtype_in = u.dtype
    u = u.float()
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, N = u.shape[0], A.shape[0], A.shape[1]
    L = u.shape[2]
    B = B.float()
    C = C.float()
    if B.dim() == 3:
        B = B[:, None]
    if C.dim() == 3:
        C = C[:, None]
    G = B.shape[1]
    H = dim // G
    deltaA = torch.exp(torch.einsum("bdl,dn->bldn", delta, A))                       # (b, L, dim, N)
    Bg = B.permute(0, 3, 1, 2)[:, :, :, None, :]                                     # (b, L, G, 1, N)
    dBu = ((delta * u).permute(0, 2, 1).reshape(batch, L, G, H)[..., None] * Bg).reshape(batch, L, dim, N)
    Cg = C.permute(0, 3, 1, 2)[:, :, :, None, :]                                     # (b, L, G, 1, N)
    x = A.new_zeros((batch, dim, N), dtype=torch.float32)
    hs = []
    for dA_t, dBu_t in zip(deltaA.unbind(1), dBu.unbind(1)):
        x = torch.addcmul(dBu_t, dA_t, x)
        hs.append(x)
    h = torch.stack(hs, dim=1).reshape(batch, L, G, H, N)                            # (b, L, G, H, N)
    y = (h * Cg).sum(-1).reshape(batch, L, dim).permute(0, 2, 1)
    out = y if D is None else y + u * D[:, None]
    if z is not None:
        out = out * F.silu(z)
    out = out.to(dtype_in)
    return (out, x) if return_last_state else out
