"""``hands3c predict``: pictures in, MANO meshes, joints and overlay pictures out."""
from __future__ import annotations

import argparse
import os

DESCRIPTION = ("Reconstruct the hand in each picture: crop around its hand box (x1.5, made square, as in "
               "training) or take the whole picture when it is already a hand crop, run the model in batches, "
               "and write per picture <name>.obj (the MANO mesh), <name>.json (2-D joints in the picture's "
               "pixels, 3-D joints and vertices in metres, MANO pose and shape, the box and camera used) and "
               "<name>_overlay.png (the shaded mesh and the 2-D skeleton over the picture, a side view beside it).")
EPILOG = ("examples:\n"
          "  hands3c predict hand.jpg --checkpoint snapshot_80.pth.tar --mano-model-path MANO_RIGHT.pkl "
          "--out out/ --bbox 120,80,200,180\n"
          "  hands3c predict crops/ --checkpoint frei.pth.tar --mano-model-path MANO_RIGHT.pkl --out out/ "
          "--input-size 224\n"
          "  hands3c predict a.jpg b.png --bboxes boxes.json ...   (boxes.json: {\"a.jpg\": [x, y, w, h], ...})\n"
          "The camera: a pinhole with focal length --focal (default: the picture's longer side, about a "
          "53 degree field of view) centred on the picture; the mesh's translation is fitted so that its "
          "projected 3-D joints meet the predicted 2-D joints (linear least squares).")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("predict", help="3-D hand meshes, joints and overlays from pictures",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                   help="picture files (.jpg/.jpeg/.png/.bmp) or folders of them (not recursive)")
    p.add_argument("--checkpoint", required=True, help="HandS3C snapshot (published layout or a bare state dict)")
    p.add_argument("--mano-model-path", required=True, help="MANO_RIGHT.pkl (your licensed copy)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    box = p.add_mutually_exclusive_group()
    box.add_argument("--bbox", default=None, metavar="x,y,w,h",
                     help="the hand box in pixels, used for every picture (default: the whole picture)")
    box.add_argument("--bboxes", default=None, metavar="FILE.json",
                     help="JSON object mapping picture file names (or paths as given) to [x, y, w, h]; "
                          "pictures it does not name are taken whole")
    p.add_argument("--input-size", type=int, choices=(256, 224), default=256,
                   help="the checkpoint's crop size: 256 (HO3D/DexYCB) or 224 (FreiHAND); default 256")
    p.add_argument("--backend", default="auto", choices=("auto", "cpu", "cuda", "triton", "reference"),
                   help="the S3C operators' backend (default auto: the fused CPU kernels on CPU, CUDA/Triton on GPU)")
    p.add_argument("--device", default="auto",
                   help="torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=8, help="pictures per forward pass (default 8)")
    p.add_argument("--focal", type=float, default=None,
                   help="focal length in the picture's pixels (default: its longer side)")
    p.add_argument("--memory-format", default="auto", choices=("auto", "channels_last", "contiguous"),
                   help="tensor layout of the model (default auto: channels_last on CPU, measured 1.3-1.4x faster "
                        "than contiguous with the same outputs; contiguous elsewhere)")
    p.add_argument("--no-overlay", action="store_true", help="write only .obj and .json")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..inference import predict_files
    from . import CLIError

    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.focal is not None and not args.focal > 0:
        raise CLIError(f"--focal must be a positive number of pixels, got {args.focal}")
    written = predict_files(args.inputs, checkpoint=args.checkpoint, mano_model_path=args.mano_model_path,
                            out_dir=args.out, bbox=args.bbox, bboxes_file=args.bboxes, input_size=args.input_size,
                            backend=args.backend, device=args.device, batch_size=args.batch_size,
                            focal=args.focal, overlay=not args.no_overlay, memory_format=args.memory_format)
    stems = {os.path.basename(p).split(".")[0].replace("_overlay", "") for p in written}
    print(f"wrote {len(written)} files for {len(stems)} pictures to {args.out}")
    return 0
