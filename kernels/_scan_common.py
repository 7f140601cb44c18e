"""Small Triton helpers shared by the selective-scan and cross-scan kernels.

The scan kernels hold a *tile* of ``S`` consecutive steps of the recurrence
``h_t = a_t * h_{t-1} + b_t`` for ``BD`` channels and ``NP`` states in registers as
three-dimensional tensors laid out ``(S, BD, NP)`` and solve it with
``tl.associative_scan`` along axis 0.  Time is the *leading* axis on purpose: Triton's
default blocked layout spreads threads over the trailing (state, channel) axes first, so
the time axis tends to land in per-thread registers and the scan becomes a short
sequential loop inside each thread instead of a shuffle tree.
"""
import triton
import triton.language as tl

# exp(x) == exp2(x * LOG2E); A is pre-multiplied by LOG2E once per program so the hot
# loop issues one ex2 per (step, channel, state).  A tl.constexpr: compiled kernels may
# only read constexpr globals (the interpreter does not check this).
LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def lin_combine(a1, b1, a2, b2):
    """Compose two affine maps h -> a*h + b: first (a1, b1), then (a2, b2).

    Associative, not commutative.  For ``reverse=True`` scans Triton (and its
    interpreter) feed the partial result from the higher indices as the first operand, so
    the same function gives ``h_t = a_t * h_{t+1} + b_t``.
    """
    return a1 * a2, a2 * b1 + b2


@triton.jit
def softplus(x):
    # max(x, 0) + log(1 + exp(-|x|)): never overflows, equals torch's softplus (whose
    # threshold=20 shortcut differs by < 3e-9) to float32 rounding.
    return tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def take_row(x3, idx, S: tl.constexpr):
    """x3[idx] for an (S, BD, NP) register tile (registers cannot be indexed dynamically)."""
    sel = (tl.arange(0, S) == idx)[:, None, None]
    return tl.sum(tl.where(sel, x3, 0.0), axis=0)


@triton.jit
def tile_states(dA, dBx, h_in, REV: tl.constexpr):
    """The states ``h_t = dA_t * h_{t-1} + dBx_t`` of one ``(S, BD, NP)`` tile entered with
    ``h_in`` ``(BD, NP)``; ``REV`` walks the tile from its last row (a reversed traversal)."""
    pa, hb = tl.associative_scan((dA, dBx), 0, lin_combine, reverse=REV)
    return hb + pa * h_in[None, :, :]


@triton.jit
def tile_adjoints(alpha, beta, carry, REV: tl.constexpr):
    """The adjoints ``lambda_t = beta_t + alpha_t * lambda_{t+1}`` of one ``(S, BD, NP)`` tile,
    entered from the tile's far end with ``carry`` ``(BD, NP)``: the opposite direction of
    :func:`tile_states` with the same ``REV``."""
    pl, lb = tl.associative_scan((alpha, beta), 0, lin_combine, reverse=not REV)
    return lb + pl * carry[None, :, :]
