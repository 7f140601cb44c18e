"""ONNX export: each hands3c operator alone (odd shapes) and the full model, run in onnxruntime.

Parity is SPEC §4's float32 tolerance against the PyTorch operators (the fused CPU kernels).
The full-model export is the expensive part: it is done once per input size (module fixture).
"""
import math
import os
import sys

import numpy as np
import onnx
import pytest
import torch

import handS3C
from handS3C import ops
from handS3C.export import choose_chunk, export_onnx
from handS3C.export.onnx_export import MODEL_OUTPUTS, export_module

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tolerances import TOL  # noqa: E402

ort = pytest.importorskip("onnxruntime")
RTOL, ATOL = TOL[torch.float32]


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(path, args):
    sess = _session(path)
    return sess.run(None, {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)})


def _close(got, want, what):
    want = want.detach().numpy()
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite values"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=what)


class CrossScan(torch.nn.Module):
    def forward(self, u, xw, dw, db, al, ds):
        return ops.cross_scan_selective_scan(u, xw, dw, db, al, ds)


def _cross_args(Bn, D, P, Q, N, R, seed, bias=-2.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(Bn, D, P, Q, generator=g),
            torch.randn(4, R + 2 * N, D, generator=g) * D ** -0.5,
            torch.rand(4, D, R, generator=g) * R ** -0.5,
            torch.randn(4, D, generator=g) * 0.5 + bias,
            torch.log(torch.rand(4 * D, N, generator=g) * 3 + 0.5),
            torch.randn(4 * D, generator=g))


@pytest.mark.parametrize("shape", [
    (2, 5, 7, 9, 4, 3),     # odd plane, padded to whole chunks (7 rows has no good divisor)
    (1, 6, 1, 11, 1, 2),    # one row, N = 1
    (1, 3, 13, 1, 16, 1),   # one column, N = 16
    (2, 8, 16, 6, 16, 4),   # T divides P: no padding
])
def test_cross_scan_parity(tmp_path, shape):
    args = _cross_args(*shape, seed=sum(shape))
    path = tmp_path / "cross.onnx"
    export_module(CrossScan(), args, path)
    got = _run(path, args)[0]
    _close(got, CrossScan()(*args), f"cross_scan {shape}")


def test_cross_scan_long_sequence_is_few_loop_iterations_and_finite(tmp_path):
    """The channel branch's shape class (a tall plane, L = 2048): three Scan nodes, a graph that
    does not grow with L, and large deltas (cumulative sums of ~1e3) stay finite."""
    args = _cross_args(1, 4, 256, 8, 16, 2, seed=3, bias=3.0)
    path = tmp_path / "long.onnx"
    export_module(CrossScan(), args, path)
    model = onnx.load(str(path))
    scans = [n for n in model.graph.node if n.op_type == "Scan"]
    assert len(scans) == 3
    assert len(model.graph.node) < 400
    T = choose_chunk(256, 8)
    assert 2 * T + 256 * 8 // T <= 3 * math.sqrt(2 * 256 * 8)
    got = _run(path, args)[0]
    _close(got, CrossScan()(*args), "cross_scan long")


class SelScan(torch.nn.Module):
    def __init__(self, softplus, **present):
        super().__init__()
        self.softplus, self.present = softplus, present

    def forward(self, u, delta, A, B, C, D, z, db):
        p = self.present
        return ops.selective_scan_fn(u, delta, A, B, C, D if p["D"] else None, z if p["z"] else None,
                                     db if p["db"] else None, delta_softplus=self.softplus,
                                     return_last_state=True)


@pytest.mark.parametrize("b,dim,L,N,G,softplus,D,z,db", [
    (2, 6, 65, 4, 3, True, True, True, True),    # odd L, grouped B/C
    (1, 4, 7, 1, 1, True, False, False, True),   # N = 1, short
    (3, 5, 130, 16, 1, False, True, False, False),
])
def test_selective_scan_parity(tmp_path, b, dim, L, N, G, softplus, D, z, db):
    g = torch.Generator().manual_seed(L + N)
    delta = torch.rand(b, dim, L, generator=g) * (0.5 if not softplus else 1.0) - (0.0 if not softplus else 1.0)
    if not softplus:
        delta = delta.abs() + 0.01
    args = (torch.randn(b, dim, L, generator=g), delta, -torch.rand(dim, N, generator=g) * 2 - 0.1,
            torch.randn(b, G, N, L, generator=g), torch.randn(b, G, N, L, generator=g),
            torch.randn(dim, generator=g), torch.randn(b, dim, L, generator=g), torch.randn(dim, generator=g))
    mod = SelScan(softplus, D=D, z=z, db=db)
    path = tmp_path / "ss.onnx"
    export_module(mod, args, path)
    got = _run(path, args)
    want = mod(*args)
    _close(got[0], want[0], "selective_scan out")
    _close(got[1], want[1], "selective_scan last_state")


class Merge(torch.nn.Module):
    def forward(self, ys, yc, z, w, b):
        return ops.s3c_merge(ys, yc, z, w, b, 1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 33)])
def test_s3c_merge_parity(tmp_path, shape):
    g = torch.Generator().manual_seed(len(shape))
    C = shape[-1]
    args = (torch.randn(shape, generator=g), torch.randn(shape, generator=g), torch.randn(shape, generator=g) * 2,
            torch.randn(C, generator=g), torch.randn(C, generator=g))
    path = tmp_path / "merge.onnx"
    export_module(Merge(), args, path)
    _close(_run(path, args)[0], Merge()(*args), "s3c_merge")


class ReadsCheckpoints(torch.nn.Module):
    def forward(self, u, xw, dw, db, al, ds):
        return torch.ops.hands3c.cross_scan_fwd(u, xw, dw, db, al, ds)[2]


def test_backward_by_products_are_refused(tmp_path):
    with pytest.raises(ValueError, match="backward-only"):
        export_module(ReadsCheckpoints(), _cross_args(1, 4, 3, 5, 4, 2, seed=0), tmp_path / "x.onnx")


def test_export_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="opset"):
        export_module(Merge(), (torch.randn(2, 3),) * 3 + (torch.randn(3),) * 2, tmp_path / "m.onnx", opset=13)


# ---- the full model ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mano_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("mano") / "MANO_RIGHT.pkl"
    try:
        from handS3C.data.synthetic import write_synthetic_mano
        write_synthetic_mano(str(path), seed=0)
    except ImportError:
        from model_helpers import write_fake_mano
        write_fake_mano(str(path))
    return path


@pytest.fixture(scope="module", params=[224, 256])
def exported(request, tmp_path_factory, mano_path):
    torch.manual_seed(request.param)
    model = handS3C.HandS3C(input_size=request.param, backend="cpu", mano_model_path=str(mano_path)).eval()
    folder = tmp_path_factory.mktemp("onnx")
    path = folder / f"hands3c_{request.param}.onnx"
    if request.param == 256:
        export_onnx(model, path, request.param, dynamic_batch=True)
    else:
        # the 224 file comes through the command line (which checks onnxruntime against PyTorch itself)
        from handS3C.cli import main

        ckpt = folder / "snapshot.pth.tar"
        torch.save({"network": model.state_dict(), "epoch": 1}, ckpt)
        assert main(["export-onnx", "--checkpoint", str(ckpt), "--out", str(path), "--input-size", "224",
                     "--dynamic-batch", "--mano-model-path", str(mano_path)]) == 0
    return model, path, request.param


def test_full_model_parity_dynamic_batch(exported):
    model, path, S = exported
    onnx.checker.check_model(str(path), full_check=True)
    sess = _session(path)
    batch_dim = sess.get_inputs()[0].shape[0]
    assert not isinstance(batch_dim, int), f"batch dimension is static ({batch_dim})"
    assert [o.name for o in sess.get_outputs()] == list(MODEL_OUTPUTS)
    for b in (1, 3):
        images = torch.rand(b, 3, S, S, generator=torch.Generator().manual_seed(b))
        with torch.no_grad():
            want = model(images)
        got = dict(zip(MODEL_OUTPUTS, sess.run(None, {sess.get_inputs()[0].name: images.numpy()})))
        for key in ("joints2d", "joints3d", "verts", "pose", "shape"):
            _close(got[key], want[key], f"{S}px batch {b} {key}")


def test_export_refuses_other_input_size(exported, tmp_path):
    model, _, S = exported
    with pytest.raises(ValueError, match="input_size"):
        export_onnx(model, tmp_path / "x.onnx", 480 - S)
