"""``hands3c export-onnx``: a checkpoint to a self-contained ONNX file (standard operators only)."""
from __future__ import annotations

import argparse

DESCRIPTION = ("Export a HandS3C checkpoint to ONNX. The S3C block's fused operators are written as standard "
               "ONNX operators (the selective scan as chunked Scan loops), so onnxruntime or any other ONNX "
               "runtime runs the file without a plugin.")
EPILOG = ("examples:\n"
          "  hands3c export-onnx --checkpoint snapshot_80.pth.tar --out hands3c.onnx\n"
          "  hands3c export-onnx --checkpoint frei.pth.tar --input-size 224 --out frei.onnx --dynamic-batch\n"
          "The file's input is 'images' (batch, 3, S, S) float32 RGB in [0, 1]; its outputs are joints2d, "
          "joints3d, verts, pose, pose_rotmat, shape, heatmaps (see HandS3C.forward).")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export-onnx", help="export a checkpoint to ONNX (runs in onnxruntime, no plugin)",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="HandS3C snapshot (published layout or a bare state dict)")
    p.add_argument("--out", required=True, help="the .onnx file to write (atomically)")
    p.add_argument("--input-size", type=int, choices=(256, 224), default=256,
                   help="crop size the model was trained for: 256 (HO3D/DexYCB) or 224 (FreiHAND); default 256")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset version, >= 18 (default 18)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="make the batch dimension symbolic (otherwise the file takes exactly --batch images)")
    p.add_argument("--batch", type=int, default=1,
                   help="the fixed batch size when --dynamic-batch is not given (default 1)")
    p.add_argument("--mano-model-path", default=None,
                   help="MANO_RIGHT.pkl; not needed when the checkpoint stores the MANO buffers (published ones do)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the onnxruntime parity check against the PyTorch model after writing")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np
    import torch

    from .. import HandS3C, load_published_checkpoint
    from ..export import export_onnx
    from . import CLIError

    if args.batch < 1:
        raise CLIError(f"--batch must be >= 1, got {args.batch}")
    model = HandS3C(input_size=args.input_size, backend="cpu", mano_model_path=args.mano_model_path)
    load_published_checkpoint(model, args.checkpoint)
    model.eval()
    if args.dynamic_batch:
        export_onnx(model, args.out, args.input_size, opset=args.opset, dynamic_batch=True)
    else:
        # a fixed batch: export at that size (a batch of 1 is specialised by torch.export, which is fine here)
        from ..export.onnx_export import MODEL_OUTPUTS, _OrderedOutputs, export_module
        images = torch.rand(args.batch, 3, args.input_size, args.input_size)
        export_module(_OrderedOutputs(model), (images,), args.out, opset=args.opset, input_names=["images"],
                      output_names=list(MODEL_OUTPUTS))
    print(f"wrote {args.out}")
    if not args.no_check:
        import onnxruntime as ort

        sess = ort.InferenceSession(args.out, providers=["CPUExecutionProvider"])
        b = 2 if args.dynamic_batch else args.batch
        x = torch.rand(b, 3, args.input_size, args.input_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            want = model(x)
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"images": x.numpy()})))
        worst = {k: float(np.abs(got[k] - want[k].numpy()).max()) for k in ("joints2d", "joints3d", "verts")}
        ok = all(np.allclose(got[k], want[k].numpy(), rtol=6e-4, atol=2e-3) for k in worst)
        print("onnxruntime vs PyTorch, max abs difference: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items())
              + ("" if ok else "  (OUTSIDE the float32 tolerance rtol 6e-4 / atol 2e-3)"))
        if not ok:
            return 1
    return 0
