# Each target is one step; README and .ci/run call these same targets.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

# The request path, compiled with mypyc (router/native.py says why); rebuilt when
# one of these changes. tests/test_native.py keeps this list equal to COMPILED.
NATIVE_SRC   := \
	router/http1.py \
	router/server.py \
	router/upstream.py \
	router/proxy.py \
	router/shadow_copy.py \
	router/hashing.py \
	router/routing.py \
	router/metrics.py \
	strategies/base.py \
	strategies/split.py \
	strategies/shadow.py \
	strategies/canary.py \
	strategies/bluegreen.py \
	strategies/automation.py
NATIVE_STAMP := build/native.stamp

.PHONY: venv native interpreted lint fmt test demo bench redis clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

native: $(NATIVE_STAMP)

$(NATIVE_STAMP): $(STAMP) $(NATIVE_SRC) router/native.py scripts/build_native.py
	$(BIN)/python scripts/build_native.py --stamp $@ $(if $(NATIVE_REQUIRED),--require)

# Run the .py files instead (e.g. to debug the data plane with pdb); `make native` undoes it.
interpreted:
	$(BIN)/python scripts/build_native.py --remove
	rm -f $(NATIVE_STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

redis:
	@command -v redis-server >/dev/null || sh scripts/install-redis.sh

test: venv redis native lint
	$(BIN)/pytest

demo: venv native
	$(BIN)/python -m examples.demo

bench: venv native
	$(BIN)/python -m bench.run

clean:
	rm -rf build router/*.so $(VENV) .mypy_cache .ruff_cache .pytest_cache
