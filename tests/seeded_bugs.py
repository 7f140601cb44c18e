"""Seeded bugs: does the test suite catch a small semantic change in a kernel?

Not a test module (pytest collects ``test_*.py`` only).  For each seeded bug below this script
copies the working tree to a scratch folder, applies the one-line change there (the original
text must occur exactly once, so a stale entry fails loudly instead of testing nothing), builds
what the change needs (the CPU extension for C++ changes, through the ninja file of
tests/backends/build_sanitized.py without sanitizers; otherwise the checkout's own compiled
extensions are copied), and runs the tests meant to catch it against
the scratch copy (``PYTHONPATH`` puts the copy's ``handS3C`` ahead of the editable install).
A bug whose tests still pass *survived*.  ``--reverted`` runs the same tests on the unchanged
copy too, which must pass (so a caught bug is caught for the right reason).

Usage::

    python tests/seeded_bugs.py --list
    python tests/seeded_bugs.py --reverted                  # every bug (C++ ones rebuild: minutes)
    python tests/seeded_bugs.py --only triton-cs-fwd-carry  # one bug

Exit status: 0 when every bug was caught (and, with ``--reverted``, every unchanged run
passed), 1 otherwise.  Add a bug here whenever a kernel change could hide one.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Bug:
    name: str
    why: str
    path: str
    old: str
    new: str
    tests: Tuple[str, ...]  # pytest arguments, relative to the repository root

    @property
    def native(self) -> bool:
        return self.path.startswith("csrc/")


BUGS = [
    Bug("triton-cs-fwd-carry",
        "Triton cross-scan forward combine keeps only the last chunk's end state (drops the older, decayed "
        "carry); indistinguishable from the right answer with two chunks",
        "kernels/cross_scan.py",
        "carry = tl.exp2(A2 * s[:, None]) * carry + he",
        "carry = he + 0.0 * carry",
        ("tests/ops/test_kernel_regressions.py", "-k", "triton_cross_scan")),
    Bug("triton-cs-bwd-carry",
        "Triton cross-scan backward combine keeps only the last chunk's adjoint",
        "kernels/cross_scan.py",
        "carry = lm + tl.exp2(A2 * s[:, None]) * carry",
        "carry = lm + 0.0 * carry",
        ("tests/ops/test_kernel_regressions.py", "-k", "triton_cross_scan")),
    Bug("cpu-merge-eps-twice",
        "CPU merge adds eps twice to the variance (outputs move by ~1e-6 relative on ordinary rows)",
        "csrc/cpu/s3c_merge_cpu.cpp",
        "std::sqrt(static_cast<float>(var / C) + eps)",
        "std::sqrt(static_cast<float>(var / C) + eps + eps)",
        ("tests/ops/test_kernel_regressions.py", "-k", "merge and cpu")),
    Bug("block-branch-params-swapped",
        "the S3C block gives each branch the other's parameters (caught by shapes alone unless d_inner == width)",
        "handS3C/modules/s3c_block.py",
        "y_c = cross_scan_selective_scan(u.permute(0, 3, 1, 2), *self.channel_params(), backend=backend)\n"
        "        y_s = cross_scan_selective_scan(u, *self.spatial_params(), backend=backend)",
        "y_c = cross_scan_selective_scan(u.permute(0, 3, 1, 2), *self.spatial_params(), backend=backend)\n"
        "        y_s = cross_scan_selective_scan(u, *self.channel_params(), backend=backend)",
        ("tests/model/test_block_branch_params.py",)),
]


def _files():
    """Tracked and untracked-but-not-ignored files of the working tree (what a commit would see)."""
    out = subprocess.check_output(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO)
    return [p for p in out.decode().split("\0") if p and os.path.isfile(os.path.join(REPO, p))]


def make_copy(bug: Bug, patched: bool) -> str:
    root = tempfile.mkdtemp(prefix=f"hands3c-seeded-{bug.name}-")
    for rel in _files():
        dst = os.path.join(root, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(os.path.join(REPO, rel), dst)
    # the package maps handS3C.triton_kernels to kernels/ (setup.py); mirror that in the copy
    os.symlink(os.path.join(root, "kernels"), os.path.join(root, "handS3C", "triton_kernels"))
    if patched:
        path = os.path.join(root, bug.path)
        text = open(path).read()
        if text.count(bug.old) != 1:
            raise SystemExit(f"seeded bug {bug.name}: {bug.path} holds the original text {text.count(bug.old)} "
                             f"times (expected once); update the entry in {__file__}")
        with open(path, "w") as f:
            f.write(text.replace(bug.old, bug.new))
    for so in os.listdir(os.path.join(REPO, "handS3C")):
        if so.endswith(".so"):
            shutil.copy2(os.path.join(REPO, "handS3C", so), os.path.join(root, "handS3C", so))
    if patched and bug.native:
        # the copy's CPU extension, compiled like setup.py's at -O1 (the tests' numbers do not
        # depend on it; the build is ~3x faster), replacing the copied one
        sys.path.insert(0, os.path.join(REPO, "tests", "backends"))
        import build_sanitized as bs

        lib = os.path.join(root, "handS3C", os.path.basename(bs.LIB))
        t0 = time.time()
        if bs.build(root=root, out=os.path.join(root, "build", "seeded"), lib=lib, extra=(), opt="-O1") != 0:
            raise SystemExit(f"seeded bug {bug.name}: the CPU extension of the scratch copy did not build")
        print(f"  built the scratch copy's CPU extension in {time.time() - t0:.0f} s", flush=True)
    return root


def run_tests(bug: Bug, root: str) -> Tuple[bool, str]:
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *bug.tests]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    summary = lines[-1] if lines else proc.stderr.strip().splitlines()[-1:]
    failed = [ln for ln in lines if ln.startswith("FAILED")]
    return proc.returncode == 0, (failed[0] if failed else "") + (" | " if failed else "") + str(summary)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="list the seeded bugs and exit")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these bugs")
    ap.add_argument("--reverted", action="store_true", help="also run each bug's tests on the unchanged copy")
    ap.add_argument("--keep", action="store_true", help="keep the scratch copies (printed) for inspection")
    args = ap.parse_args(argv)
    bugs = [b for b in BUGS if not args.only or b.name in args.only]
    if args.only and len(bugs) != len(args.only):
        raise SystemExit(f"unknown bug names; known: {[b.name for b in BUGS]}")
    if args.list:
        for b in bugs:
            print(f"{b.name:30s} {b.path}: {b.why}\n{'':30s} tests: {' '.join(b.tests)}")
        return 0
    ok = True
    for b in bugs:
        print(f"[{b.name}] {b.why}", flush=True)
        runs = [("with the bug", True)] + ([("reverted", False)] if args.reverted else [])
        for label, patched in runs:
            root = make_copy(b, patched)
            passed, summary = run_tests(b, root)
            verdict = ("SURVIVED" if passed else "caught") if patched else ("passes" if passed else "FAILS")
            ok &= (not passed) if patched else passed
            print(f"  {label:13s} {verdict:9s} {summary}", flush=True)
            if args.keep:
                print(f"  scratch copy: {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)
    print("every seeded bug was caught" if ok else "SOME SEEDED BUGS SURVIVED (or an unchanged run failed)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
