"""``hands3c evaluate``: a checkpoint over a dataset's evaluation split, scored with the official protocol.

Writes into ``--out``: ``metrics.json`` (every metric the ground truth allows, plus what was
run), ``pck_curves.png`` (the 3-D PCK curves, unaligned and aligned, joints and mesh, drawn as
the official evaluation draws them) and, for FreiHAND and HO3D, the submission the official
server takes (``pred.json`` zipped as ``pred.zip``); prints a table of the metrics.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
import warnings

DATASET_CHOICES = ("freihand", "ho3d", "dexycb")
BACKEND_CHOICES = ("auto", "cpu", "cuda", "triton", "reference")

DESCRIPTION = (
    "Run a HandS3C checkpoint over the evaluation split of FreiHAND, HO3D or DexYCB and score it with the "
    "benchmark's protocol: FreiHAND's and HO3D's official evaluation scripts (joints and mesh, unaligned and "
    "Procrustes-aligned; HO3D also scale-and-translation aligned; F@5/F@15 mm; AUC of the PCK over 0-50 mm) "
    "and DexYCB's published MPJPE / PA-MPJPE (plus PA-MPVPE and F-scores). Predictions are placed at the "
    "ground-truth root as the published evaluations do. Metrics are computed where the split has 3-D ground "
    "truth (FreiHAND's and HO3D's evaluation ground truth is public); the submission file is written either way.")
EPILOG = (
    "outputs (in --out):\n"
    "  metrics.json      metrics (errors in mm, F-scores and AUCs in [0, 1]) and the run's settings\n"
    "  pck_curves.png    3-D PCK curves (joints and mesh, unaligned and aligned)\n"
    "  pred.json, pred.zip   FreiHAND / HO3D server submission: [xyz_list, verts_list] in metres\n"
    "                        (HO3D: OpenGL coordinates, HO3D joint order)\n"
    "examples:\n"
    "  hands3c evaluate --dataset freihand --data-root /data/FreiHAND_pub_v2 \\\n"
    "      --checkpoint snapshot_80.pth.tar --mano-model-path MANO_RIGHT.pkl --out eval_frei\n"
    "  hands3c evaluate --dataset ho3d --data-root /data/HO3D_v3 --checkpoint snapshot_70.pth.tar \\\n"
    "      --mano-model-path MANO_RIGHT.pkl --batch-size 32 --workers 8 --device cuda\n"
    "exit status: 0 success, 1 bad input (missing files, corrupt samples, a checkpoint that does not fit), "
    "2 usage error.")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="score a checkpoint on a dataset's evaluation split",
                              description=textwrap.fill(DESCRIPTION, 100), epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=DATASET_CHOICES,
                   help="benchmark (decides the reader, the input size 224/256 and the scoring protocol)")
    p.add_argument("--data-root", required=True, metavar="DIR",
                   help="the dataset's root folder, in its published layout (see the README's Data section)")
    p.add_argument("--checkpoint", required=True, metavar="FILE",
                   help="a published snapshot (snapshot_<epoch>.pth.tar) or one written by 'hands3c train'; "
                        "loaded strictly (every key must match)")
    p.add_argument("--mano-model-path", metavar="FILE", default=None,
                   help="MANO_RIGHT.pkl. The checkpoint stores MANO's arrays and the network uses those; this "
                        "file gives the DexYCB ground-truth meshes (from the MANO annotations) and is checked "
                        "against the checkpoint's copy. Without it the checkpoint's copy serves for both")
    p.add_argument("--split", default=None,
                   help="split to score (default: the evaluation split: freihand/ho3d 'evaluation', dexycb 'test')")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="operator backend of the S3C block (default auto: the fastest available on the device)")
    p.add_argument("--memory-format", default="auto", choices=("auto", "channels_last", "contiguous"),
                   help="tensor layout of the model (default auto: channels_last on CPU, where oneDNN's NHWC "
                        "convolutions ran inference 1.15x faster than contiguous at batch 1 and 8 on one thread "
                        "(1.37x and 1.23x on two) with the same outputs to 1e-6, as in hands3c predict; "
                        "contiguous elsewhere)")
    p.add_argument("--device", default=None,
                   help="torch device to run on, e.g. cpu, cuda, cuda:1 (default: cuda when available, else cpu)")
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per forward pass (default 16)")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="DataLoader worker processes decoding images (default 2; 0 decodes in this process)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: ./eval_<dataset>); created if missing, files replaced atomically")
    p.add_argument("--layout", default="auto", choices=("auto", "coco", "official"),
                   help="HO3D only: the COCO-style annotation files or the official v2/v3 layout (default auto)")
    p.add_argument("--crop", default="joints", choices=("joints", "bbox"),
                   help="DexYCB only: crop around the ground-truth 2-D joints (the published protocol, default) "
                        "or around the annotated box")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip samples that fail (missing or undecodable image, NaN annotation) and report how "
                        "many, instead of stopping at the first. A submission is then shorter than the split "
                        "and the server will refuse it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling of a checkpoint that weights_only loading refuses (only for files "
                        "you trust: unpickling can run code)")
    p.set_defaults(func=run)


def _check_args(args):
    from . import CLIError

    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.workers < 0:
        raise CLIError(f"--workers must be 0 or more, got {args.workers}")
    if not os.path.isdir(args.data_root):
        raise FileNotFoundError(f"--data-root: folder not found: {args.data_root!r}")
    if not os.path.isfile(args.checkpoint):
        raise FileNotFoundError(f"--checkpoint: file not found: {args.checkpoint!r}")
    if args.mano_model_path is not None and not os.path.isfile(args.mano_model_path):
        raise FileNotFoundError(f"--mano-model-path: file not found: {args.mano_model_path!r}")


def _build_model(args, input_size, device):
    import torch

    from .. import HandS3C, load_published_checkpoint

    with warnings.catch_warnings():
        # Without a MANO file the layer starts as placeholders; the strict load below fills them
        # from the checkpoint (checked after), so the placeholder warning would only mislead.
        warnings.filterwarnings("ignore", message="ManoLayer built without a MANO model file")
        model = HandS3C(input_size=input_size, backend=args.backend, mano_model_path=args.mano_model_path)
    report = load_published_checkpoint(model, args.checkpoint, strict=True, trust_file=args.trust_checkpoint)
    if model.mano_layer.is_placeholder:
        raise ValueError(f"{args.checkpoint}: the checkpoint holds no MANO arrays and no --mano-model-path was given")
    if args.mano_model_path is not None:
        from ..model.mano import ManoLayer

        given = ManoLayer(args.mano_model_path)
        if not torch.allclose(given.th_v_template, model.mano_layer.th_v_template, atol=1e-6) \
                or not torch.allclose(given.th_shapedirs, model.mano_layer.th_shapedirs, atol=1e-6):
            warnings.warn(f"the MANO arrays stored in {args.checkpoint} differ from {args.mano_model_path}; the "
                          "network predicts with the checkpoint's, ground-truth meshes come from the file",
                          UserWarning, stacklevel=2)
        gt_mano = given
    else:
        gt_mano = model.mano_layer
    return model.to(device), gt_mano.to(device), report


def run(args) -> int:
    import torch

    from ..data import EVAL_SPLIT, DEFAULT_INPUT_SIZE, build_dataset
    from ..evaluation import (evaluate_model, format_metrics_table, plot_pck_curves, write_json_atomic,
                              write_submission)

    _check_args(args)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    split = args.split or EVAL_SPLIT[args.dataset]
    out_dir = args.out or f"eval_{args.dataset}"
    input_size = DEFAULT_INPUT_SIZE[args.dataset]
    kwargs = {"input_size": input_size, "augment": False, "skip_bad": args.skip_bad}
    if args.dataset == "ho3d":
        kwargs["layout"] = args.layout
    if args.dataset == "dexycb":
        kwargs["crop"] = args.crop
    dataset = build_dataset(args.dataset, args.data_root, split, **kwargs)
    model, gt_mano, report = _build_model(args, input_size, device)
    from ..training.config import resolve_memory_format
    # the images stay NCHW: with channels_last weights the first convolution reorders its
    # 3-channel input once, and every later activation is NHWC
    model = model.to(memory_format=resolve_memory_format(args.memory_format, device.type))
    t0 = time.perf_counter()
    result = evaluate_model(model, dataset, batch_size=args.batch_size, protocol=args.dataset, device=device,
                            num_workers=args.workers, progress=not args.no_progress,
                            gt_mano=gt_mano if args.dataset == "dexycb" else None)
    seconds = time.perf_counter() - t0
    skipped = list(getattr(dataset, "skipped", []))
    # Decode failures found inside loader workers never reach ``dataset.skipped`` of this process;
    # the evaluation loop reports them from the stand-in samples.
    known = {f for _, f, _ in skipped}
    for i in result.replaced:
        f = dataset.records[i].file
        if f not in known:
            skipped.append((i, f, "the image does not decode"))
            known.add(f)
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    if result.curves:
        files["pck_curves"] = plot_pck_curves(result.curves, os.path.join(out_dir, "pck_curves.png"),
                                              title=f"HandS3C on {args.dataset} ({split})")
    if args.dataset in ("freihand", "ho3d"):
        sub = write_submission(out_dir, result.joints3d, result.verts, args.dataset)
        files["submission_json"], files["submission_zip"] = sub["json"], sub["zip"]
    record = {
        "dataset": args.dataset, "split": split, "data_root": os.path.abspath(args.data_root),
        "checkpoint": os.path.abspath(args.checkpoint), "checkpoint_epoch": report.epoch,
        "protocol": result.protocol, "backend": args.backend, "device": str(device), "input_size": input_size,
        "memory_format": args.memory_format,
        "num_samples": len(dataset), "skipped": [{"index": i, "file": f, "reason": r} for i, f, r in skipped],
        "seconds": round(seconds, 3), "metrics": result.metrics,
        "curves": {k: {"thresholds_mm": v["thresholds_mm"], "pck": v["pck"], "auc": v["auc"]}
                   for k, v in result.curves.items()},
        "files": {k: os.path.basename(v) for k, v in files.items()},
    }
    files["metrics"] = write_json_atomic(os.path.join(out_dir, "metrics.json"), record)
    print(format_metrics_table(result.metrics, title=f"HandS3C on {args.dataset} ({split}), "
                                                     f"{os.path.basename(args.checkpoint)}"))
    if skipped:
        print(f"skipped {len(skipped)} bad sample(s) (--skip-bad); first: sample {skipped[0][0]} "
              f"({skipped[0][1]}): {skipped[0][2]}", file=sys.stderr)
        if "submission_zip" in files:
            print("warning: the submission lacks the skipped samples; the official server expects every sample",
                  file=sys.stderr)
    if not result.curves:
        print(f"no 3-D ground truth in this split: submit {files.get('submission_zip', 'the predictions')} "
              "to the official server to score it", file=sys.stderr)
    print("wrote " + ", ".join(sorted(files.values())))
    return 0
