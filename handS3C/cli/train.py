"""``hands3c train``: train HandS3C from scratch or resume, on one machine or many (torchrun)."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Train HandS3C on FreiHAND, HO3D or DexYCB with the published schedules (Adam, lr 1e-4,
batch 64 per GPU; HO3D 80 epochs x0.7 every 10, DexYCB 20 epochs x0.9 every epoch,
FreiHAND 100 epochs x0.7 every 10).  Flags override a --config file, which overrides the
published defaults; the effective config is printed and saved as OUT/config.json.

OUT receives snapshot_{N}.pth.tar after epoch N (the published layout: epoch, network with
'module.' prefixes, optimizer; plus the resume state), log.jsonl, curves.png, best.json and
TensorBoard events under OUT/tensorboard.  --resume auto (the default) continues from the
newest valid snapshot in OUT, so re-running the same command after an interruption resumes."""

EPILOG = """\
examples:
  hands3c train --dataset freihand --data-root /data/FreiHAND --mano-model-path MANO_RIGHT.pkl --out runs/frei
  torchrun --nproc-per-node 8 -m handS3C train --dataset ho3d --data-root /data/HO3D \\
      --mano-model-path MANO_RIGHT.pkl --out runs/ho3d
  several nodes (run on each; torchrun's c10d rendezvous):
  torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400 --rdzv-id ho3d \\
      -m handS3C train --dataset ho3d ...

fault injection for tests (environment): HANDS3C_TRAIN_FAULT=kill-after-step:N or snapshot-write:N"""


def _positive(v):
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v!r}")
    return n


def _nonneg(v):
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {v!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {v!r}")
    return n


def _float(v):
    try:
        return float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {v!r}") from None


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train HandS3C (fresh or resumed; torchrun for several GPUs)",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=("freihand", "ho3d", "dexycb"),
                   help="which dataset (and so which published schedule and input size)")
    p.add_argument("--data-root", required=True, help="the dataset's folder (its published layout)")
    p.add_argument("--mano-model-path", required=True, help="path to MANO_RIGHT.pkl (never shipped)")
    p.add_argument("--out", required=True, help="output folder: snapshots, logs, curves (created if missing)")
    p.add_argument("--backbone-weights", default=None,
                   help="local torchvision ResNet-50 ImageNet state dict to start the backbone from")
    p.add_argument("--epochs", type=_positive, default=None, help="number of epochs (default: published)")
    p.add_argument("--batch-size", type=_positive, default=None, help="images per process/GPU per step (default 64)")
    p.add_argument("--lr", type=_float, default=None, help="Adam learning rate (default 1e-4)")
    p.add_argument("--lr-step-epochs", type=_positive, default=None, help="multiply the lr every N epochs")
    p.add_argument("--lr-gamma", type=_float, default=None, help="by this factor (default: published)")
    p.add_argument("--amp", choices=("off", "bf16", "fp16"), default=None,
                   help="mixed precision: bf16 autocast (CPU or GPU) or fp16 with a gradient scaler (GPU); "
                        "default off. bf16 (with channels_last) made the CPU step at batch 4 1.7x faster on an "
                        "AMX CPU, but is not the default: its pose came out beyond SPEC §4's bfloat16 tolerance "
                        "(1.001x the bound on the benchmark's batch, 3x at inference batch 8) and its loss "
                        "drifted 11-37%% from float32's within 9 steps (python -m benchmarks.train_bench)")
    p.add_argument("--memory-format", choices=("auto", "channels_last", "contiguous"), default=None,
                   help="layout of the convolutions' weights and the images (default auto: channels_last on CPU, "
                        "where the float32 step at batch 4 measured 1.08-1.15x faster than contiguous on one "
                        "thread (0.91-1.34x in noisier 2-thread runs) with the same outputs to 1e-6; contiguous "
                        "on GPU, not measured there)")
    p.add_argument("--backend", choices=("auto", "cpu", "cuda", "triton", "reference"), default=None,
                   help="the S3C block's kernels (default auto)")
    p.add_argument("--device", default=None, help="auto (a GPU when visible), cpu or cuda")
    p.add_argument("--workers", type=_nonneg, default=None, help="data loader worker processes per GPU (default 4)")
    p.add_argument("--resume", default=None, help="auto (default): newest valid snapshot in --out, else fresh; "
                                                  "never: fresh start; or a snapshot path")
    p.add_argument("--eval-every", type=_nonneg, default=None,
                   help="evaluate every N epochs and after the last (0: never); default: published 10 (DexYCB 5)")
    p.add_argument("--eval-batch-size", type=_positive, default=None, help="batch size of evaluation (default 32)")
    p.add_argument("--save-every", type=_positive, default=None, help="snapshot every N epochs (default 1)")
    p.add_argument("--keep", type=_positive, default=None, help="keep the newest K snapshots (default 3; "
                                                                "the best is kept too)")
    p.add_argument("--accumulate", type=_positive, default=None,
                   help="split each batch into N micro-batches (gradient accumulation; default 1)")
    p.add_argument("--seed", type=_nonneg, default=None, help="seed of initial weights, data order and "
                                                              "augmentation (default 0)")
    p.add_argument("--log-every", type=_positive, default=None, help="log every N steps (default 10)")
    p.add_argument("--skip-nonfinite", action="store_true", default=None,
                   help="skip (and count) batches whose loss is NaN/inf instead of stopping")
    p.add_argument("--check-finite", action="store_true", default=None,
                   help="check every stage's output (backbone, S3C, regressor) for NaN/inf and stop naming the "
                        "first bad one: for debugging a divergent run (costs one reduction per stage)")
    p.add_argument("--no-augment", action="store_true", help="train without augmentation")
    p.add_argument("--deterministic", action="store_true", default=None,
                   help="torch.use_deterministic_algorithms (bitwise-reproducible resume on GPU too)")
    p.add_argument("--threads", type=_positive, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("--config", default=None, help="JSON or TOML file of config fields (overridden by flags)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training import config_for, train

    overrides = dict(
        data_root=args.data_root, mano_model_path=args.mano_model_path, backbone_weights=args.backbone_weights,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_step_epochs=args.lr_step_epochs,
        lr_gamma=args.lr_gamma, amp=args.amp, memory_format=args.memory_format,
        backend=args.backend, device=args.device, workers=args.workers,
        resume=args.resume, eval_every=args.eval_every, eval_batch_size=args.eval_batch_size,
        save_every=args.save_every, keep=args.keep, accumulate=args.accumulate, seed=args.seed,
        log_every=args.log_every, skip_nonfinite=args.skip_nonfinite, check_finite=args.check_finite, deterministic=args.deterministic,
        threads=args.threads)
    if args.no_augment:
        overrides["augment"] = False
    if args.no_progress:
        overrides["progress"] = False
    cfg = config_for(args.dataset, args.out, file=args.config, **overrides)
    summary = train(cfg)
    best = summary.get("best")
    print(f"hands3c train: done, {summary['step']} steps; last snapshot {summary['last_snapshot']}"
          + (f"; best {best['file']} ({best['metric']} {best['value']:.4g})" if best else ""))
    return 0
