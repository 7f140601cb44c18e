"""ONNX translations of the ``hands3c`` operators (standard ONNX operators only, opset >= 18).

These are the entries of the custom translation table that :func:`handS3C.export.export_onnx`
passes to ``torch.onnx.export(..., dynamo=True)``: each function receives the exporter's
symbolic values (``ir.Value``) and records ordinary ONNX nodes, so the exported file runs in
any ONNX runtime without a plugin.

The chunked scan
----------------
A selective scan ``h_l = a_l * h_{l-1} + b_l`` (``a_l = exp(delta_l * A)`` in (0, 1],
``b_l = delta_l * B_l * u_l``, ``y_l = sum_n C_l h_l``) over a sequence of length L is cut into
``nc`` chunks of ``T`` steps and computed by three ONNX ``Scan`` nodes, so the runtime runs
``2 T + nc`` loop iterations (about ``2 sqrt(2 L)``) instead of ``L``:

1. over the T steps, all chunks at once: the recurrence inside every chunk from a zero
   state (tensors (..., D, N, chunks) per iteration), emitting the local outputs and the
   chunk end states;
2. over the chunks: the state entering each chunk, ``H_c = exp(A * sum(delta in chunk c-1))
   * H_{c-1} + h_end_{c-1}``;
3. over the T steps again: the contribution of the entering state, ``sum_n C_t exp(A *
   cumsum(delta)_t) H_c``.

Every exponent is ``A * (a sum of non-negative deltas)`` with A < 0, so every ``exp`` is of
a non-positive number: nothing overflows (the chunked forms that divide by ``exp`` of a
cumulative sum are the ones that return inf/NaN at HandS3C's sequence lengths).

The four traversals of the cross scan are index arithmetic on the one row-major plane
``(P, Q)`` (no traversal copies): row-major chunks are a free reshape of the flattened plane,
column-major chunks are segments of ``T`` rows within a column (a free reshape of the P axis),
the reverse directions are ``Scan``'s ``scan_input_directions`` / ``scan_output_directions``
and ``CumSum``'s ``reverse``.  All four directions share each ``Scan`` node.  Positions added
to make the plane a whole number of chunks get ``delta = 0``: the identity step (a = 1,
b = 0), so padding never changes a state.

Outputs that only the backward uses (the cross scan's and selective scan's ``checkpoints``)
are emitted as zero tensors of the right shape: an inference graph never reads them and the
exporter's dead-code pass removes them; :func:`handS3C.export.export_onnx` refuses to export
a graph that reads them.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import onnx_ir as ir
import onnxscript
from onnxscript import opset18 as op
from onnxscript._internal.builder import build_graph

FLOAT = ir.DataType.FLOAT
_OPSET = {"": 18}

__all__ = ["cross_scan_fwd", "selective_scan_fwd", "s3c_merge_fwd", "translation_table", "choose_chunk"]


# ---- small helpers --------------------------------------------------------------------------

def _emit(op_type: str, inputs: Sequence[Optional[ir.Value]], attributes: dict, num_outputs: int) -> List[ir.Value]:
    """Record one node with a given number of outputs.

    The exporter's recorder guesses an operator's output count from its schema, which for
    ``Scan`` (variadic outputs) is one; so ``Scan`` nodes are appended to it directly."""
    tracer = onnxscript.evaluator.default()
    node = ir.Node("", op_type, list(inputs), attributes=ir.convenience.convert_attributes(attributes),
                   num_outputs=num_outputs, version=18)
    tracer.nodes.append(node)
    return list(node.outputs)


def _ints(values) -> ir.Value:
    return op.Constant(value_ints=[int(v) for v in values])


def _value(name: str) -> ir.Value:
    return ir.Value(name=name, type=ir.TensorType(FLOAT))


def _graph(fn, in_names: Sequence[str], out_names: Sequence[str], name: str) -> ir.Graph:
    return build_graph(fn, inputs=[_value(n) for n in in_names], outputs=[_value(n) for n in out_names],
                       opset_imports=dict(_OPSET), name=name)


def _softplus(x: ir.Value) -> ir.Value:
    """log(1 + exp(x)) in the overflow-free form max(x, 0) + log(1 + exp(-|x|))."""
    one = op.Constant(value_float=1.0)
    return op.Add(op.Relu(x), op.Log(op.Add(one, op.Exp(op.Neg(op.Abs(x))))))


def _static_dims(v: ir.Value, what: str) -> List[Optional[int]]:
    if v.shape is None:
        raise ValueError(f"ONNX export: the shape of {what} is unknown at export time")
    return [d if isinstance(d, int) else None for d in v.shape]


def choose_chunk(P: int, Q: int) -> int:
    """Steps per chunk T for a plane of P rows and Q columns (a sequence of L = P*Q).

    ``2 T + L / T`` loop iterations are fewest at T = sqrt(L / 2).  Column-major chunks are
    segments of a column, so T should divide P; a divisor at least half the ideal T is taken,
    otherwise the ideal T and the plane is padded with identity steps to a multiple of T rows."""
    L = P * Q
    ideal = max(1, min(P, int(round(math.sqrt(L / 2.0)))))
    for t in range(ideal, 0, -1):
        if P % t == 0:
            if 2 * t >= ideal:
                return t
            break
    return ideal


# ---- the chunked scan core ------------------------------------------------------------------

class _Direction:
    """One scan direction prepared as 5-or-more-D tensors ``(*lead, F, a, T, c)``.

    ``delta``/``du``/``cum``: (*lead, D, a, T, c); ``B``/``C``: (*lead, N, a, T, c); ``A``
    broadcasts against the state (*lead, D, N, a, c).  ``reverse``: traversal runs from the
    last step of the last chunk to the first.  ``col_chunks``: the chunks are visited in
    (c, a) order (column-major traversal) instead of (a, c)."""

    def __init__(self, delta, du, B, C, A, reverse: bool, col_chunks: bool):
        self.delta, self.du, self.B, self.C, self.A = delta, du, B, C, A
        self.reverse, self.col_chunks = reverse, col_chunks


def _chunked_scan(dirs: Sequence[_Direction], nlead: int, N: int, final_state: bool):
    """Run the three-Scan chunked recurrence for every direction at once.

    Returns per direction the output (*lead, D, a, T, c) (without the skip term) and, with
    ``final_state``, the state after the last step (*lead, D, N)."""
    n = len(dirs)
    ax_f = nlead          # the feature axis D / N in the per-direction tensors
    ax_t = nlead + 2      # the step axis T
    ax_chunk_out = nlead + 2  # where Scan stacks its per-step outputs (back onto T)
    ax_n_state = nlead + 1  # the state axis N in (*lead, D, N, a, c)
    uns_d = _ints([ax_f + 1])
    uns_bn = _ints([ax_f])
    red_n = _ints([ax_n_state])

    # zero initial states (*lead, D, N, a, c); dynamic batch comes from the inputs' shapes
    zero = op.Constant(value_float=0.0)
    inits = []
    for d in dirs:
        sh_d = op.Shape(d.delta)
        state_shape = op.Concat(op.Slice(sh_d, _ints([0]), _ints([nlead + 1])), _ints([N]),
                                op.Slice(sh_d, _ints([nlead + 1]), _ints([nlead + 2])),
                                op.Slice(sh_d, _ints([nlead + 3]), _ints([nlead + 4])), axis=0)
        inits.append(op.Expand(zero, state_shape))

    # 1. local scans over T from zero states, all chunks in parallel
    A_list = [d.A for d in dirs]

    def body1(bop, *vals):
        hs, xs = vals[:n], vals[n:]
        new_h, ys = [], []
        for j in range(n):
            dt, du, Bt, Ct = xs[4 * j: 4 * j + 4]
            a = bop.Exp(bop.Mul(bop.Unsqueeze(dt, uns_d), A_list[j]))
            h = bop.Add(bop.Mul(a, hs[j]), bop.Mul(bop.Unsqueeze(du, uns_d), bop.Unsqueeze(Bt, uns_bn)))
            new_h.append(h)
            ys.append(bop.ReduceSum(bop.Mul(h, bop.Unsqueeze(Ct, uns_bn)), red_n, keepdims=0))
        return [*new_h, *ys]

    g1 = _graph(body1, [f"h{j}" for j in range(n)] + [f"{k}{j}" for j in range(n) for k in ("dt", "du", "B", "C")],
                [f"h{j}_out" for j in range(n)] + [f"y{j}" for j in range(n)], "chunk_local_scan")
    scan_in = [t for d in dirs for t in (d.delta, d.du, d.B, d.C)]
    outs = _emit("Scan", [*inits, *scan_in], {
        "body": g1, "num_scan_inputs": 4 * n,
        "scan_input_axes": [ax_t] * (4 * n),
        "scan_input_directions": [int(d.reverse) for d in dirs for _ in range(4)],
        "scan_output_axes": [ax_chunk_out] * n,
        "scan_output_directions": [int(d.reverse) for d in dirs],
    }, 2 * n)
    h_end, y_local = outs[:n], outs[n:]

    # 2. the state entering every chunk, chunks in traversal order along one axis
    sh_state_lead = None
    seq_in, totals = [], []
    for j, d in enumerate(dirs):
        total = op.ReduceSum(d.delta, _ints([ax_t]), keepdims=0)          # (*lead, D, a, c)
        decay = op.Exp(op.Mul(op.Unsqueeze(total, uns_d), d.A))            # (*lead, D, N, a, c)
        pair = []
        for t in (h_end[j], decay):
            if d.col_chunks:
                perm = list(range(nlead + 2)) + [nlead + 3, nlead + 2]
                t = op.Transpose(t, perm=perm)
            pair.append(op.Reshape(t, _ints([0] * (nlead + 2) + [-1])))  # (*lead, D, N, chunks)
        seq_in.extend(pair)
        totals.append(total)
    h0 = [op.ReduceSum(op.Mul(zero, x), _ints([nlead + 2]), keepdims=0) for x in seq_in[::2]]

    def body2(bop, *vals):
        Hs, xs = vals[:n], vals[n:]
        new_H, starts = [], []
        for j in range(n):
            he, dec = xs[2 * j], xs[2 * j + 1]
            new_H.append(bop.Add(bop.Mul(dec, Hs[j]), he))
            starts.append(bop.Identity(Hs[j]))
        return [*new_H, *starts]

    g2 = _graph(body2, [f"H{j}" for j in range(n)] + [f"{k}{j}" for j in range(n) for k in ("hend", "decay")],
                [f"H{j}_out" for j in range(n)] + [f"Hstart{j}" for j in range(n)], "chunk_carry")
    outs = _emit("Scan", [*h0, *seq_in], {
        "body": g2, "num_scan_inputs": 2 * n,
        "scan_input_axes": [nlead + 2] * (2 * n),
        "scan_input_directions": [int(d.reverse) for d in dirs for _ in range(2)],
        "scan_output_axes": [nlead + 2] * n,
        "scan_output_directions": [int(d.reverse) for d in dirs],
    }, 2 * n)
    H_final, H_start_seq = outs[:n], outs[n:]

    H_start = []
    for j, d in enumerate(dirs):
        hs = H_start_seq[j]
        if d.col_chunks:
            sh = op.Shape(h_end[j])
            hs = op.Reshape(hs, op.Concat(op.Slice(sh, _ints([0]), _ints([nlead + 2])),
                                          op.Slice(sh, _ints([nlead + 3]), _ints([nlead + 4])),
                                          op.Slice(sh, _ints([nlead + 2]), _ints([nlead + 3])), axis=0))
            hs = op.Transpose(hs, perm=list(range(nlead + 2)) + [nlead + 3, nlead + 2])
        else:
            hs = op.Reshape(hs, op.Shape(h_end[j]))
        H_start.append(hs)

    # 3. the entering state's contribution at every step: sum_n C_t exp(A cum_t) H_start
    cums = [op.CumSum(d.delta, _ints([ax_t]), reverse=int(d.reverse)) for d in dirs]

    def body3(bop, *xs):
        ys = []
        for j in range(n):
            cum, Ct = xs[2 * j], xs[2 * j + 1]
            e = bop.Exp(bop.Mul(bop.Unsqueeze(cum, uns_d), A_list[j]))
            ys.append(bop.ReduceSum(bop.Mul(bop.Mul(e, H_start[j]), bop.Unsqueeze(Ct, uns_bn)), red_n, keepdims=0))
        return ys

    g3 = _graph(body3, [f"{k}{j}" for j in range(n) for k in ("cum", "C")], [f"yc{j}" for j in range(n)],
                "chunk_entry")
    y_corr = _emit("Scan", [t for j in range(n) for t in (cums[j], dirs[j].C)], {
        "body": g3, "num_scan_inputs": 2 * n,
        "scan_input_axes": [ax_t] * (2 * n),
        "scan_output_axes": [ax_chunk_out] * n,
    }, n)
    ys = [op.Add(y_local[j], y_corr[j]) for j in range(n)]
    return ys, (H_final if final_state else None)


# ---- cross_scan_fwd ----------------------------------------------------------------------------

def cross_scan_fwd(u, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, out_order=None):
    """``hands3c::cross_scan_fwd`` -> (out (B,D,P,Q), dbl (B,L,4,R+2N), checkpoints zeros).

    ``out_order`` (the memory layout the S3C block asks of out) is ignored: ONNX tensors have
    no strides, and out's logical (B, D, P, Q) values do not depend on it."""
    _, D, P, Q = _static_dims(u, "u")
    if None in (D, P, Q):
        raise ValueError(f"ONNX export of cross_scan_fwd needs static D, P, Q (got u shape {u.shape}); "
                         "only the batch may be dynamic")
    R = _static_dims(dt_projs_weight, "dt_projs_weight")[2]
    N = _static_dims(A_logs, "A_logs")[1]
    L = P * Q
    T = choose_chunk(P, Q)
    Pp = -(-P // T) * T
    a_row, a_col = Pp * Q // T, Pp // T

    u = op.Cast(u, to=FLOAT)
    u_seq = op.Reshape(u, _ints([0, D, L]))                                           # (B, D, L)
    dbl = op.MatMul(op.Unsqueeze(x_proj_weight, _ints([0])), op.Unsqueeze(u_seq, _ints([1])))  # (B, 4, C, L)
    ax2 = _ints([2])
    dt_low = op.Slice(dbl, _ints([0]), _ints([R]), ax2)
    Bm = op.Slice(dbl, _ints([R]), _ints([R + N]), ax2)
    Cm = op.Slice(dbl, _ints([R + N]), _ints([R + 2 * N]), ax2)
    delta = op.MatMul(op.Unsqueeze(dt_projs_weight, _ints([0])), dt_low)             # (B, 4, D, L)
    delta = _softplus(op.Add(delta, op.Unsqueeze(dt_projs_bias, _ints([0, 3]))))
    du = op.Mul(delta, op.Unsqueeze(u_seq, _ints([1])))

    def plane(t, F):
        """(B, 4, F, L) -> (B, 4, F, P', Q) with identity-step zero rows appended."""
        t = op.Reshape(t, _ints([0, 4, F, P, Q]))
        if Pp != P:
            t = op.Pad(t, _ints([0, 0, 0, 0, 0, 0, 0, 0, Pp - P, 0]))
        return t

    delta, du, Bm, Cm = plane(delta, D), plane(du, D), plane(Bm, N), plane(Cm, N)
    A = op.Neg(op.Exp(op.Reshape(A_logs, _ints([4, D, N, 1, 1]))))
    parts = [op.Split(t, axis=1, num_outputs=4) for t in (delta, du, Bm, Cm)]
    A_k = op.Split(A, axis=0, num_outputs=4)

    dirs = []
    for k in range(4):
        col = k in (1, 3)
        tensors = []
        for t, F in zip((parts[0][k], parts[1][k], parts[2][k], parts[3][k]), (D, D, N, N)):
            # row-major: the flattened plane is (chunks, T); column-major: each column's P'
            # rows are (P'/T, T) and the chunk index runs over (P'/T, Q)
            shape = [0, F, a_col, T, Q] if col else [0, F, a_row, T, 1]
            tensors.append(op.Reshape(op.Squeeze(t, _ints([1])), _ints(shape)))
        dirs.append(_Direction(*tensors, op.Squeeze(A_k[k], _ints([0])), reverse=k >= 2, col_chunks=col))
    ys, _ = _chunked_scan(dirs, nlead=1, N=N, final_state=False)
    y = None
    for j, yk in enumerate(ys):
        yk = op.Reshape(yk, _ints([0, D, Pp, Q]))
        y = yk if y is None else op.Add(y, yk)
    if Pp != P:
        y = op.Slice(y, _ints([0]), _ints([P]), _ints([2]))
    D_sum = op.ReduceSum(op.Reshape(Ds, _ints([4, D])), _ints([0]), keepdims=0)
    y = op.Add(y, op.Mul(u, op.Reshape(D_sum, _ints([D, 1, 1]))))
    nck = -(-L // 64)
    dbl_out = op.Transpose(dbl, perm=[0, 3, 1, 2])                                   # (B, L, 4, C)
    ckpt = op.Expand(op.Constant(value_float=0.0),
                     op.Concat(op.Slice(op.Shape(u), _ints([0]), _ints([1])), _ints([4, D, nck, N]), axis=0))
    return y, dbl_out, ckpt


# ---- selective_scan_fwd --------------------------------------------------------------------

def selective_scan_fwd(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus: bool = False):
    """``hands3c::selective_scan_fwd`` -> (out (b,dim,L) in u's dtype, last_state (b,dim,N) f32, zeros)."""
    _, dim, L = _static_dims(u, "u")
    _, G, N, _ = _static_dims(B, "B")
    if None in (dim, L, G, N):
        raise ValueError("ONNX export of selective_scan_fwd needs static dim, L, groups and N; only the batch "
                         "may be dynamic")
    dpg = dim // G
    T = choose_chunk(L, 1)
    Lp = -(-L // T) * T
    nc = Lp // T
    out_dtype = u.dtype
    uf = op.Cast(u, to=FLOAT)
    dt = op.Cast(delta, to=FLOAT)
    if delta_bias is not None:
        dt = op.Add(dt, op.Reshape(delta_bias, _ints([dim, 1])))
    if delta_softplus:
        dt = _softplus(dt)
    du = op.Mul(dt, uf)

    def seq(t, rank, shape_mid):
        """(b, ..., L) -> (b, *shape_mid, chunks, T, 1), padded with identity steps (zeros)."""
        if Lp != L:
            t = op.Pad(t, _ints([0] * (2 * rank - 1) + [Lp - L]))
        return op.Reshape(t, _ints([0, *shape_mid, nc, T, 1]))

    dt5 = seq(dt, 3, (G, dpg))
    du5 = seq(du, 3, (G, dpg))
    B5 = seq(op.Cast(B, to=FLOAT), 4, (G, N))
    C5 = seq(op.Cast(C, to=FLOAT), 4, (G, N))
    A5 = op.Reshape(A, _ints([G, dpg, N, 1, 1]))
    d = _Direction(dt5, du5, B5, C5, A5, reverse=False, col_chunks=False)
    (y,), (last,) = _chunked_scan([d], nlead=2, N=N, final_state=True)
    y = op.Reshape(y, _ints([0, dim, Lp]))
    if Lp != L:
        y = op.Slice(y, _ints([0]), _ints([L]), _ints([2]))
    if D is not None:
        y = op.Add(y, op.Mul(uf, op.Reshape(D, _ints([dim, 1]))))
    if z is not None:
        zf = op.Cast(z, to=FLOAT)
        y = op.Mul(y, op.Mul(zf, op.Sigmoid(zf)))
    y = op.Cast(y, to=out_dtype)
    last = op.Reshape(last, _ints([0, dim, N]))
    nck = -(-L // 64)
    ckpt = op.Expand(op.Constant(value_float=0.0),
                     op.Concat(op.Slice(op.Shape(u), _ints([0]), _ints([1])), _ints([dim, nck, N]), axis=0))
    return y, last, ckpt


# ---- s3c_merge_fwd -------------------------------------------------------------------------

def s3c_merge_fwd(y_spatial, y_channel, z, weight, bias, eps: float = 1e-5):
    """``hands3c::s3c_merge_fwd`` -> (LayerNorm(ys + yc) * silu(z), mean (M,), rstd (M,))."""
    x = op.Add(y_spatial, y_channel)
    y, mean, rstd = op.LayerNormalization(x, weight, bias, axis=-1, epsilon=float(eps), stash_type=1)
    zf = op.Cast(z, to=FLOAT)
    out = op.Mul(y, op.Mul(zf, op.Sigmoid(zf)))
    flat = _ints([-1])
    return out, op.Reshape(mean, flat), op.Reshape(rstd, flat)


def translation_table():
    """``{torch op overload: translation}`` for ``torch.onnx.export(custom_translation_table=...)``."""
    import torch
    from .. import _ext  # noqa: F401  (the operator schemas)

    return {
        torch.ops.hands3c.cross_scan_fwd.default: cross_scan_fwd,
        torch.ops.hands3c.selective_scan_fwd.default: selective_scan_fwd,
        torch.ops.hands3c.s3c_merge_fwd.default: s3c_merge_fwd,
    }
