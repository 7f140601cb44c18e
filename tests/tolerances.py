"""SPEC §4 tolerances (mamba-ssm's test suite) and comparison helpers shared by the tests."""
import torch

# dtype of u/delta -> (rtol, atol)
TOL = {
    torch.float32: (6e-4, 2e-3),
    torch.float16: (3e-3, 5e-3),
    torch.bfloat16: (3e-2, 5e-2),
}
WEIGHT_TOL = (1e-3, 1e-3)


def out_tol(dtype):
    return TOL[dtype]


def weight_tol(dtype, has_z=False):
    """Weight gradients: 1e-3/1e-3, raised to the input tolerance when z is used."""
    if has_z:
        r, a = TOL[dtype]
        return max(r, WEIGHT_TOL[0]), max(a, WEIGHT_TOL[1])
    return WEIGHT_TOL


def du_tol(dtype):
    r, a = TOL[dtype]
    return 2 * r, 2 * a


def ddelta_tol(dtype):
    r, a = TOL[dtype]
    return 5 * r, 10 * a


def dA_tol(dtype, has_z=False):
    r, a = weight_tol(dtype, has_z)
    return r, 5 * a


def assert_close(actual, expected, rtol, atol, name=""):
    """allclose in float64 with a message giving the worst element."""
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    assert torch.isfinite(a).all(), f"{name}: non-finite values in the result"
    err = (a - e).abs()
    bound = atol + rtol * e.abs()
    if not bool((err <= bound).all()):
        i = int(torch.argmax(err - bound))
        raise AssertionError(
            f"{name}: max abs error {err.max().item():.3g} (rtol={rtol}, atol={atol}); worst element "
            f"{a.flatten()[i].item():.6g} vs {e.flatten()[i].item():.6g}")
