# The two commands of the README:
#   make bench   set up (venv, pinned dependencies, extensions) and run the benchmark
#   make test    set up and run the test suite (C++ header tests through CTest, then pytest)
# Both are idempotent: set-up steps rerun only when their inputs change.

PYTHON_BOOTSTRAP ?= python3
VENV      := .venv
PY        := $(VENV)/bin/python
PIP       := $(PY) -m pip
CUDA_HOME ?= $(if $(wildcard /usr/local/cuda/bin/nvcc),/usr/local/cuda,)
export CUDA_HOME
NATIVE_SOURCES := $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh') setup.py
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: bench test setup build ctest clean

setup: $(VENV)/.deps-installed
build: $(VENV)/.extensions-built

$(VENV)/bin/python:
	$(PYTHON_BOOTSTRAP) -m venv $(VENV)

# Pinned dependencies, then the reference packages exactly as SPEC §5 requires on a CPU
# machine (no CUDA build, no dependency closure: their full closure pulls ~1.7 GB).
$(VENV)/.deps-installed: requirements/ci.txt | $(VENV)/bin/python
	$(PIP) install -q -r requirements/ci.txt
	MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE $(PIP) install -q --no-build-isolation --no-deps mamba-ssm==2.3.2.post1
	CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE $(PIP) install -q --no-build-isolation --no-deps causal-conv1d==1.7.0
	touch $@

$(VENV)/.extensions-built: $(VENV)/.deps-installed $(NATIVE_SOURCES)
	$(PIP) install -q --no-build-isolation -e .
	$(PY) -c "import handS3C._ext as e; print('CPU extension:', e.HAS_CPU_EXT, '| CUDA extension:', e.HAS_CUDA_EXT)"
	touch $@

ctest: $(VENV)/.deps-installed
	cmake -S . -B build/cmake -DHANDS3C_BUILD_EXTENSION=OFF > /dev/null
	cmake --build build/cmake --target test_scan_math -j 2 > /dev/null
	cd build/cmake && ctest --output-on-failure

test: build ctest
	$(PY) -m pytest tests $(PYTEST_ARGS)

bench: build
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf build $(VENV) handS3C/*.so *.egg-info
