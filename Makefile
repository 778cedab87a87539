# Each target is one step; README and .ci/run call these same targets.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# uv installs the locked versions (uv.lock); make installs uv itself, pinned by hash.
UV      := .uv/bin/uv
export UV_PYTHON := $(PY)
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

# The request path, compiled with mypyc (router/native.py says why); rebuilt when
# one of these changes: the folders router/native.py's COMPILED_DIRS names.
NATIVE_SRC   := $(wildcard router/dataplane/*.py) $(wildcard strategies/*.py)
NATIVE_STAMP := build/native.stamp

# Shipping: the wheel (compiled data plane) and the container image (Containerfile).
VERSION     := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE       ?= deploy-router:$(VERSION)
IMAGE_BUILD ?= podman build
BASE        ?=

.PHONY: venv lock lock-check test-latest native interpreted lint fmt test demo bench redis rules monitoring dist image clean

venv: $(STAMP)

$(UV): scripts/uv.txt
	test -x .uv/bin/python || $(PY) -m venv .uv
	.uv/bin/pip install -q --require-hashes -r scripts/uv.txt
	touch $@

# Exactly the locked versions, hashes checked; a lock that no longer matches
# pyproject.toml stops here (setuptools first: it builds the project itself).
$(STAMP): pyproject.toml uv.lock $(UV)
	@$(MAKE) --no-print-directory lock-check
	$(UV) sync -q --locked --no-install-project
	$(UV) sync -q --locked
	touch $(STAMP)

lock-check: $(UV)
	@$(UV) lock --check -q 2>/dev/null || { echo "uv.lock does not match pyproject.toml: run 'make lock' (re-resolves, then runs the tests) and commit uv.lock" >&2; exit 1; }

# Upgrades on purpose: re-resolve to the newest versions, install them, run the suite.
lock: $(UV)
	$(UV) lock --upgrade
	$(MAKE) test

# Early warning, never part of CI: the suite against the newest versions, in a copy
# of the working tree with its own venv (build/latest), so nothing here changes.
test-latest: $(UV)
	sh scripts/test-latest.sh $(abspath $(UV))

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

# The Prometheus rules: their syntax, then the unit tests beside them (one firing and
# one quiet case per alert). promtool comes with Debian's `prometheus` package, which
# .ci/run installs; tests/support/prometheus.py finds it (and prometheus) the same way.
PROMTOOL ?= $(or $(shell command -v promtool 2>/dev/null),/usr/bin/promtool)
rules:
	@command -v $(PROMTOOL) >/dev/null || { echo "promtool not found: apt-get install prometheus, or make PROMTOOL=/path/to/promtool" >&2; exit 1; }
	$(PROMTOOL) check rules deploy/prometheus/rules.yml
	cd deploy/prometheus && $(PROMTOOL) test rules rules_test.yml

# Rewrite the dashboard and the PrometheusRule from their sources (scripts/monitoring.py).
monitoring: venv
	$(BIN)/python -m scripts.monitoring

test: venv redis native lint rules
	PROMTOOL=$(PROMTOOL) $(BIN)/pytest

demo: venv native
	$(BIN)/python -m examples.demo

bench: venv native
	$(BIN)/python -m bench.run

# sdist + platform wheel, built by the venv's locked setuptools and mypyc (setup.py).
dist: venv
	rm -rf dist
	$(UV) build -q --no-build-isolation --python $(BIN)/python -o dist

# BASE=... overrides the Containerfile's python slim base; IMAGE_BUILD="docker build" works too.
image:
	$(IMAGE_BUILD) -f Containerfile -t $(IMAGE) $(if $(BASE),--build-arg BASE=$(BASE)) .

clean:
	rm -rf build dist router/*.so strategies/*.so $(VENV) .uv .mypy_cache .ruff_cache .pytest_cache
