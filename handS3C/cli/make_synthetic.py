"""``hands3c make-synthetic``: write a small dataset in the real FreiHAND / HO3D / DexYCB layout.

The tests and the trainer's end-to-end test run the real readers on these; so can a user who wants
to try the pipeline before the licensed datasets arrive.  Hands are posed by the MANO layer (the
given ``MANO_RIGHT.pkl`` or, without one, a procedural model of the same structure written to
``DIR/MANO_RIGHT.pkl``) and rendered with flat shading over textured backgrounds.
"""
from __future__ import annotations

import argparse
import json
import os

FORMATS = ("freihand", "ho3d", "ho3d-official", "dexycb")
DESCRIPTION = ("Write a synthetic dataset in exactly the layout of the real one (annotation files, folders, JPEG "
               "images), with MANO hands rendered over textured backgrounds, for tests and trial runs.")
EPILOG = ("formats:\n"
          "  freihand       training_{K,mano,xyz,verts}.json + training/rgb/%08d.jpg (4 versions per sample),\n"
          "                 evaluation_{K,xyz,verts,mano}.json + evaluation/rgb/%08d.jpg\n"
          "  ho3d           annotations/HO3D_{train,evaluation}_data.json + {train,evaluation}/<seq>/rgb/<id>.jpg\n"
          "  ho3d-official  {train,evaluation}.txt + <split>/<seq>/{rgb/<id>.jpg,meta/<id>.pkl}\n"
          "  dexycb         annotations/DEX_YCB_s0_{train,test}_data.json + <subject>/<seq>/<serial>/color_*.jpg\n"
          "                 (every second hand is a left hand)\n"
          "examples:\n"
          "  hands3c make-synthetic --format ho3d --out /tmp/ho3d --n 64\n"
          "  hands3c make-synthetic --format freihand --out /tmp/frei --n 16 --mano-model-path MANO_RIGHT.pkl\n"
          "Then read it like the real set, e.g. handS3C.data.HO3D('/tmp/ho3d', 'train').")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("make-synthetic", help="write a small synthetic dataset in a real dataset's layout",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", required=True, choices=FORMATS, help="which dataset's layout to write")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; existing files are replaced)")
    p.add_argument("--n", required=True, type=int, metavar="N",
                   help="training samples (FreiHAND: unique samples, written in 4 image versions each)")
    p.add_argument("--n-eval", type=int, default=None, metavar="N",
                   help="evaluation/test samples (default: max(2, N // 2))")
    p.add_argument("--mano-model-path", default=None, metavar="FILE",
                   help="MANO_RIGHT.pkl to pose the hands with (default: write a procedural model of the same "
                        "structure to DIR/MANO_RIGHT.pkl and use it)")
    p.add_argument("--image-size", type=int, nargs="+", default=None, metavar="PX",
                   help="FreiHAND: one side (default 224); other formats: W H (default 640 480)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same dataset)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from . import CLIError
    if args.n < 1:
        raise CLIError(f"--n must be at least 1, got {args.n}")
    if args.n_eval is not None and args.n_eval < 1:
        raise CLIError(f"--n-eval must be at least 1, got {args.n_eval}")
    size = None
    if args.image_size is not None:
        if args.format == "freihand":
            if len(args.image_size) != 1:
                raise CLIError("--image-size takes one value (the side) for --format freihand")
            size = args.image_size[0]
        else:
            if len(args.image_size) != 2:
                raise CLIError(f"--image-size takes two values (W H) for --format {args.format}")
            size = tuple(args.image_size)
        if min(args.image_size) < 32:
            raise CLIError(f"--image-size must be at least 32 pixels, got {args.image_size}")
    if args.mano_model_path is not None and not os.path.isfile(args.mano_model_path):
        raise CLIError(f"--mano-model-path: file not found: {args.mano_model_path!r}")
    from ..data.synthetic import make_synthetic
    summary = make_synthetic(args.format, args.out, args.n, mano_model_path=args.mano_model_path, seed=args.seed,
                             image_size=size, n_eval=args.n_eval, progress=not args.no_progress)
    if args.json:
        print(json.dumps(summary))
        return 0
    w, h = summary["image_size"]
    print(f"wrote a synthetic {args.format} dataset to {summary['out_dir']}: {summary['train']} training and "
          f"{summary['eval']} evaluation samples, {w}x{h} JPEG images")
    print(f"MANO model: {summary['mano_model_path']}")
    for f in summary["files"]:
        print(f"  {os.path.relpath(f, summary['out_dir'])}")
    return 0
