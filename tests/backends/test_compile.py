"""The fused operators under torch.compile and torch.export (no graph breaks)."""
import torch

import handS3C


def _block(seed=0):
    torch.manual_seed(seed)
    return handS3C.S3CBlock(d_model=32, width=6, d_state=16, backend="cpu")


def test_s3c_block_compiles_fullgraph_on_cpu():
    block = _block()
    x = torch.randn(2, 32, 5, 6)
    eager = block(x)
    compiled = torch.compile(block, fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    # Gradients through the compiled graph equal eager ones.
    xg = x.clone().requires_grad_(True)
    compiled(xg).square().sum().backward()
    xe = x.clone().requires_grad_(True)
    block.zero_grad()
    g_compiled = xg.grad
    block(xe).square().sum().backward()
    torch.testing.assert_close(g_compiled, xe.grad, rtol=1e-4, atol=1e-5)


def test_s3c_block_exports():
    block = _block(1).eval()
    x = torch.randn(1, 32, 4, 6)
    ep = torch.export.export(block, (x,))
    names = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert any("hands3c.cross_scan_fwd" in n for n in names)
    assert any("hands3c.s3c_merge_fwd" in n for n in names)
    torch.testing.assert_close(ep.module()(x), block(x), rtol=1e-6, atol=1e-6)
