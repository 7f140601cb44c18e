"""Helpers shared by the full-model tests (MANO, model, checkpoint, parity).

* :func:`write_fake_mano` writes a synthetic MANO pickle with the real field names, types and
  shapes (``fake_mano_structure.json``): float64 arrays, a scipy CSC ``J_regressor``, uint32
  faces, the MANO kinematic tree; optionally ``shapedirs`` as a chumpy ``Ch`` object (a
  stand-in class that pickles under the name ``chumpy.ch.Ch``, so the loader's chumpy path
  runs without chumpy installed).  Values are random but plausible (template ~10 cm, convex
  regressor and skinning weights), never zero.
* :func:`fast_selective_scan_ref` computes what mamba-ssm's ``selective_scan_ref`` computes
  (same per-step float32 recurrence) with a backward as cheap as its forward: the project's
  float64 reference run in float32 (its recurrence has a hand-written adjoint).  mamba-ssm's own
  backward is O(L^2) (its per-step indexing materialises a full-size gradient per step,
  SPEC §5).
"""
from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import torch

from handS3C import reference
from handS3C.reference import _single_thread
# the unpatched getter of mamba-ssm's selective_scan_ref (the context managers below patch the
# module attribute, not this binding)
from handS3C.reference import mamba_selective_scan_ref as _real_mamba_ref

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
    """mamba-ssm ``selective_scan_ref`` semantics in float32 with a backward as cheap as the
    forward: :func:`handS3C.reference.selective_scan_ref64` (the project's one hand-written O(L)
    recurrence) computed in float32, ``out`` returned in u's dtype.  Same per-step float32
    recurrence as mamba-ssm's loop; the C contraction is summed in another order
    (rounding-level differences)."""
    res = reference.selective_scan_ref64(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                                         dtype=torch.float32)
    if return_last_state:
        return res[0].to(u.dtype), res[1]
    return res.to(u.dtype)


# ---------------------------------------------------------------------------------------
# Full-model helpers
# ---------------------------------------------------------------------------------------

class fast_reference_scan:
    """Context manager: the "reference" backend's inner selective scan becomes
    :func:`fast_selective_scan_ref` (same recurrence and float32 arithmetic as mamba-ssm's
    ``selective_scan_ref``, O(L) backward).  Everything else on the reference path (the four
    materialised traversals, projections, cross-merge, merge) is unchanged."""

    def __enter__(self):
        from handS3C import reference

        self._ref = reference
        self._orig = reference.mamba_selective_scan_ref
        reference.mamba_selective_scan_ref = lambda: fast_selective_scan_ref
        return self

    def __exit__(self, *exc):
        self._ref.mamba_selective_scan_ref = self._orig
        return False


def randomize_model(model, seed: int = 0):
    """Give every constant-initialised tensor random, never-zero values so that every part of
    the network shapes the outputs: BatchNorm affine and running statistics, the S3C block's
    constant inits (LayerNorms, A_logs, Ds; as the fixture does), and the regressor's tiny
    published init replaced by PyTorch's default init."""
    import torch.nn as nn

    g = torch.Generator().manual_seed(seed)

    def rnd(t, scale):
        return torch.randn(t.shape, generator=g, dtype=t.dtype) * scale

    with torch.no_grad():
        for m in model.regressor.modules():
            if type(m) in (nn.Conv2d, nn.Linear):
                m.reset_parameters()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1.0 + rnd(m.weight, 0.1))
                m.bias.copy_(rnd(m.bias, 0.1))
                m.running_mean.copy_(rnd(m.running_mean, 0.1))
                m.running_var.copy_(1.0 + rnd(m.running_var, 0.1).abs())
        sa = model.S3C.self_attention
        for p in (model.S3C.ln_1.weight, model.S3C.ln_1.bias, sa.A_logs, sa.Ds, sa.A_logs_ch, sa.Ds_ch,
                  sa.out_norm.weight, sa.out_norm.bias):
            p.add_(rnd(p, 0.1))
        # FPN output ~unit scale, so the S3C block's residual branch (after its LayerNorm) is a
        # sizeable part of the features the heads see
        model.backbone.smooth3.weight.mul_(0.1)
        model.backbone.smooth3.bias.mul_(0.1)
        # MANO parameters that swing with the features (rotations far from constant)
        head = model.regressor.mano_regHead
        head.pose_reg.weight.mul_(4.0)
        head.shape_reg.weight.mul_(2.0)
        # sharper spatial softmax, so that the 2-D joints really depend on the features
        model.regressor.hand_regHead.betas.copy_(6.0 + rnd(model.regressor.hand_regHead.betas, 1.0))
    return model


def make_model(input_size: int, backend: str, mano_path, seed: int = 0):
    """HandS3C with the synthetic MANO file, seeded and randomised (see :func:`randomize_model`)."""
    from handS3C.model import HandS3C

    torch.manual_seed(seed)
    return randomize_model(HandS3C(input_size, backend=backend, mano_model_path=mano_path), seed)


def make_batch(input_size: int, batch: int, seed: int = 0):
    """Random never-zero images in [0.01, 1] and plausible targets (pose, shape, joints2d)."""
    g = torch.Generator().manual_seed(1000 + seed)
    images = 0.01 + 0.99 * torch.rand(batch, 3, input_size, input_size, generator=g)
    targets = {
        "pose": torch.randn(batch, 48, generator=g) * 0.4,
        "shape": torch.randn(batch, 10, generator=g),
        "joints2d": 0.1 + 0.8 * torch.rand(batch, 21, 2, generator=g),
    }
    return images, targets


class _MambaForwardFastBackward(torch.autograd.Function):
    """Forward: mamba-ssm's ``selective_scan_ref`` (the reference values, bit for bit).
    Backward: the VJP of :func:`fast_selective_scan_ref`, after checking that its recomputed
    forward equals mamba-ssm's."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias):
        with _single_thread():
            out = _real_mamba_ref()(u, delta, A, B, C, D, delta_bias=delta_bias, delta_softplus=True)
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, out)
        return out

    @staticmethod
    def backward(ctx, gout):
        *inputs, out = ctx.saved_tensors
        inputs = [t.detach().requires_grad_() for t in inputs]
        with torch.enable_grad():
            y = fast_selective_scan_ref(*inputs[:6], delta_bias=inputs[6], delta_softplus=True)
        err = (y.detach() - out).abs().max().item()
        scale = out.abs().max().item()
        if err > 1e-5 * scale + 1e-6:
            raise AssertionError(f"fast_selective_scan_ref differs from mamba-ssm's selective_scan_ref by {err:.3g} "
                                 f"(max |out| {scale:.3g})")
        return torch.autograd.grad(y, inputs, gout)


def _mamba_forward_fast_backward(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                                 return_last_state=False):
    if z is not None or not delta_softplus or return_last_state or D is None or delta_bias is None:
        raise NotImplementedError("only the S3C call pattern (D, delta_bias, softplus, no z) is supported")
    return _MambaForwardFastBackward.apply(u, delta, A, B, C, D, delta_bias)


class mamba_forward_fast_backward(fast_reference_scan):
    """Context manager: the "reference" backend's inner scan gives mamba-ssm's
    ``selective_scan_ref`` values in the forward pass and the O(L) transcription's gradients in
    the backward pass (mamba-ssm's own backward is O(L^2), SPEC §5)."""

    def __enter__(self):
        from handS3C import reference

        self._ref = reference
        self._orig = reference.mamba_selective_scan_ref
        reference.mamba_selective_scan_ref = lambda: _mamba_forward_fast_backward
        return self
