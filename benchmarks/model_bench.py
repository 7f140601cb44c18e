"""Full-model benchmark: inference at several batch sizes and one training step.

The published path's training step cannot be timed here: autograd through mamba-ssm's
Python scan at the channel branch's L = 16384 takes over 10 minutes per step (SPEC §5).  The
table therefore reports the reference's *forward* at the training batch, a strict lower
bound of its training step, and the speed-up of the fused training step over that bound.
"""
from __future__ import annotations

import contextlib
import warnings

import torch


def _autocast(args, device):
    if args.dtype == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def run(args, device, backends, HandS3C, measure, skipped, check, progress, extra):
    rows = []
    S = args.input_size
    torch.manual_seed(0)
    mano = getattr(args, "mano_model_path", None)
    if mano:
        model = HandS3C(input_size=S, backend="reference", mano_model_path=mano).to(device)
        extra["MANO layer"] = mano
    else:
        # No MANO file ships with the project: the MANO layer runs on placeholder buffers of the
        # real shapes, which cost the same time as real ones (the benchmark reads no MANO output).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="ManoLayer built without a MANO model file")
            model = HandS3C(input_size=S, backend="reference").to(device)
        extra["MANO layer"] = "placeholder buffers of the real shapes (no MANO file given; timings do not depend on it)"
    g = torch.Generator().manual_seed(0)
    batches = [int(b) for b in args.model_batches.split(",") if b.strip()]
    items = [(b, be) for b in batches for be in ["reference"] + list(backends)]
    wants = {}
    for batch, backend in progress(items, args, "model inference"):
        images = torch.rand(batch, 3, S, S, generator=g).to(device)
        model.eval()
        model.backend = backend
        tag = f"HandS3C inference {S}px B={batch}"

        def infer():
            with torch.no_grad(), _autocast(args, device):
                return model(images)
        if backend == "reference":
            wants[batch] = infer()["joints2d"]
        else:
            check(tag, backend, infer()["joints2d"], wants[batch], rtol=1e-3, atol=1e-3)
        rows.append(measure(tag, backend, infer, args, device, "eval mode" + (", bf16 autocast" if args.dtype == "bfloat16" else "")))

    # Share of the S3C block in fused inference at batch 1.
    for backend in backends:
        model.backend = backend
        feats = torch.randn(1, 256, S // 8, S // 8, generator=g).to(device)
        with torch.no_grad():
            blk = measure("S3C block alone", backend, lambda: model.S3C(feats), args, device)
        inf = [r for r in rows if r.backend == backend and r.name == f"HandS3C inference {S}px B=1"]
        if inf:
            extra[f"S3C block share of inference at B=1 [{backend}]"] = f"{100 * blk.median_s / inf[0].median_s:.0f}%"
        model.backend = "reference"
        with torch.no_grad():
            blk_ref = measure("S3C block alone", "reference", lambda: model.S3C(feats), args, device)
        inf_ref = [r for r in rows if r.backend == "reference" and r.name == f"HandS3C inference {S}px B=1"]
        if inf_ref:
            extra["S3C block share of inference at B=1 [reference]"] = f"{100 * blk_ref.median_s / inf_ref[0].median_s:.0f}%"

    # One training step: forward, published losses, backward, Adam step.
    B = args.train_batch
    images = torch.rand(B, 3, S, S, generator=g).to(device)
    targets = {"pose": (0.3 * torch.randn(B, 48, generator=g)).to(device),
               "shape": torch.randn(B, 10, generator=g).to(device),
               "joints2d": torch.rand(B, 21, 2, generator=g).to(device)}
    tag = f"HandS3C training step {S}px B={B}"
    model.train()
    model.backend = "reference"

    def ref_forward():
        with torch.no_grad(), _autocast(args, device):
            return model.loss(model(images), targets)["total"]
    bound = measure(f"{tag} (forward only)", "reference", ref_forward, args, device,
                    "lower bound of the reference training step: its backward takes >10 min (SPEC §5)")
    rows.append(bound)
    rows.append(skipped(tag, "reference", "not timed: autograd through mamba-ssm's scan at L=16384 takes >10 min"))
    for backend in backends:
        model.backend = backend
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}

        def step():
            opt.zero_grad(set_to_none=True)
            with _autocast(args, device):
                loss = model.loss(model(images), targets)["total"]
            loss.backward()
            opt.step()
        r = measure(tag, backend, step, args, device, "forward + loss + backward + Adam")
        rows.append(r)
        extra[f"training step [{backend}] vs reference forward alone"] = f"{bound.median_s / r.median_s:.1f}x faster"
        model.load_state_dict(state)
    model.backend = "reference"
    return rows
