"""Build the CPU extension with AddressSanitizer + UndefinedBehaviorSanitizer, and run pytest on it.

The CI sanitizer job (``.ci/run``) uses this script; it is not a test module (pytest collects
``test_*.py`` only).  Two subcommands:

``python tests/backends/build_sanitized.py build``
    Compiles exactly the sources ``setup.py`` builds into ``handS3C._C`` (``csrc/cpu/*.cpp``,
    ``csrc/bindings/*.cpp``) with ``-fsanitize=address,undefined`` into a separate folder,
    ``build/sanitize/`` (never next to the package: the normal build stays untouched).  A ninja
    file does the work, so a second run recompiles only what changed (header dependencies
    included).  About four minutes from scratch on two cores.

``python tests/backends/build_sanitized.py pytest [pytest arguments]``
    Runs pytest in a process that loads the sanitized library as ``handS3C._C`` instead of the
    package's own, with the sanitizer runtime preloaded: ``LD_PRELOAD`` = libasan, then
    libstdc++ (Triton's import needs a libstdc++ newer than the one an unpreloaded ASan
    process would resolve first), ``ASAN_OPTIONS=detect_leaks=0`` (CPython and torch keep
    allocations alive on purpose) and ``UBSAN_OPTIONS=halt_on_error=1``.  Any sanitizer report
    ends the process with a non-zero status, so CI fails; pytest's own status is returned
    otherwise.  The process re-executes itself once to set ``LD_PRELOAD`` (the dynamic loader
    reads it only at start).

Typical use: ``python tests/backends/build_sanitized.py build && python
tests/backends/build_sanitized.py pytest tests/ops/test_raw_op_safety.py -q``.
"""
from __future__ import annotations

import glob
import os
import shlex
import subprocess
import sys
import sysconfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "build", "sanitize")
LIB = os.path.join(OUT, "_C" + sysconfig.get_config_var("EXT_SUFFIX"))
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
            # vptr checks need the RTTI of every polymorphic class, and torch's own (not
            # instrumented) libraries define most of them: only false reports come from it.
            "-fno-sanitize=vptr"]
_MARK = "HANDS3C_SANITIZED_CHILD"


def _sources(root=REPO):
    return sorted(glob.glob(os.path.join(root, "csrc", "cpu", "*.cpp"))
                  + glob.glob(os.path.join(root, "csrc", "bindings", "*.cpp")))


def ninja_file(root=REPO, out=OUT, lib=LIB, extra=tuple(SANITIZE), opt="-O1") -> str:
    """The ninja file that builds ``root``'s CPU extension as ``lib`` (objects under ``out``)
    with ``extra`` compile/link flags.  tests/seeded_bugs.py uses it without sanitizers."""
    from torch.utils.cpp_extension import include_paths, library_paths

    includes = [os.path.join(root, "csrc", "include"), os.path.join(root, "csrc"),
                *include_paths(), sysconfig.get_paths()["include"]]
    # build_info.cpp embeds setup.py's record header when one exists; without it the record
    # says "no setup.py record" and the import check has nothing to compare (as for CMake).
    generated = os.path.join(REPO, "build", "generated")
    if os.path.isdir(generated):
        includes.append(generated)
    # setup.py's flags (csrc is compiled the same way), at -O1 so the build and the run stay
    # within the CI budget, with debug lines for the sanitizer's stack traces.
    cflags = ([opt, "-g", "-std=c++20", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-fPIC",
               "-Wall", "-Wno-unknown-pragmas", "-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C"]
              + list(extra) + [f"-I{p}" for p in includes])
    ldflags = (["-shared", "-fopenmp"] + list(extra) + [f"-L{p}" for p in library_paths()]
               + [f"-Wl,-rpath,{p}" for p in library_paths()] + ["-lc10", "-ltorch", "-ltorch_cpu", "-ltorch_python"])
    q = lambda items: " ".join(shlex.quote(x) for x in items)
    lines = ["ninja_required_version = 1.3", f"cflags = {q(cflags)}", f"ldflags = {q(ldflags)}", "",
             "rule cxx", "  command = c++ -MMD -MF $out.d $cflags -c $in -o $out", "  depfile = $out.d",
             "  deps = gcc", "  description = CXX $in", "",
             "rule link", "  command = c++ $in -o $out $ldflags", "  description = LINK $out", ""]
    objs = []
    for src in _sources(root):
        obj = os.path.join(out, "obj", os.path.relpath(src, root).replace(os.sep, "_")[:-4] + ".o")
        objs.append(obj)
        lines.append(f"build {obj}: cxx {src}")
    lines += [f"build {lib}: link {' '.join(objs)}", f"default {lib}", ""]
    return "\n".join(lines)


def build(root=REPO, out=OUT, lib=LIB, extra=tuple(SANITIZE), opt="-O1") -> int:
    os.makedirs(os.path.join(out, "obj"), exist_ok=True)
    path = os.path.join(out, "build.ninja")
    text = ninja_file(root, out, lib, extra, opt)
    old = open(path).read() if os.path.exists(path) else None
    if old != text:  # keep the mtime when nothing changed (ninja then rebuilds nothing)
        with open(path + ".tmp", "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)
    ninja = os.path.join(os.path.dirname(sys.executable), "ninja")
    cmd = [ninja if os.path.exists(ninja) else "ninja", "-C", out, "-j", str(os.cpu_count() or 2)]
    rc = subprocess.call(cmd, stdout=None if out == OUT else subprocess.DEVNULL)
    if rc == 0 and out == OUT:
        print(f"sanitized CPU extension: {LIB}")
    return rc


def _runtime(name: str) -> str:
    path = subprocess.check_output(["c++", f"-print-file-name={name}"], text=True).strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        raise SystemExit(f"build_sanitized: the compiler does not know {name} (got {path!r}); install the "
                         "sanitizer runtime of the compiler that built the library (libasan / libstdc++)")
    return os.path.realpath(path)


def run_pytest(args) -> int:
    if not os.path.exists(LIB):
        raise SystemExit(f"build_sanitized: {LIB} does not exist; run `python {__file__} build` first")
    if os.environ.get(_MARK) != "1":
        env = dict(os.environ)
        env[_MARK] = "1"
        env["LD_PRELOAD"] = ":".join([_runtime("libasan.so"), _runtime("libstdc++.so.6")])
        env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0:halt_on_error=1:" + env.get("ASAN_OPTIONS", "")
        env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1:" + env.get("UBSAN_OPTIONS", "")
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), "pytest", *args], env)

    import importlib.machinery
    import importlib.util

    import torch  # noqa: F401  (the library links against libc10 / libtorch, loaded by torch's import)

    # Load the sanitized library under the package's module name before the package imports
    # its own: handS3C._ext then finds it in sys.modules and registers nothing twice.
    loader = importlib.machinery.ExtensionFileLoader("handS3C._C", LIB)
    spec = importlib.util.spec_from_file_location("handS3C._C", LIB, loader=loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["handS3C._C"] = module
    spec.loader.exec_module(module)

    import handS3C._ext as ext

    loaded = getattr(ext, "_C", None) or sys.modules.get("handS3C._C")
    if loaded is not module or not ext.HAS_CPU_EXT:
        raise SystemExit(f"build_sanitized: handS3C did not take the sanitized library ({LIB})")
    print(f"build_sanitized: handS3C._C is {LIB} (AddressSanitizer + UBSan)", flush=True)
    import pytest

    return int(pytest.main(list(args)))


def main(argv) -> int:
    if not argv or argv[0] not in ("build", "pytest"):
        print(__doc__)
        return 2
    return build() if argv[0] == "build" else run_pytest(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
