# Mesh Mixer: set-up, run and test. Every target installs what it needs, and only the locked set:
# requirements/runtime.txt (what `mixer serve` runs with) and requirements/dev.txt (that plus the test
# and lint tools), both generated from pyproject.toml's ranges by `make lock`, with hashes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LOCK_RUNTIME := requirements/runtime.txt
LOCK_DEV := requirements/dev.txt
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
# Exactly the locked files: every distribution's hash is checked and nothing is resolved here.
PIP_LOCKED := $(PY) -m pip install -q --require-hashes --no-deps
# Our own package, built with the locked setuptools rather than whatever an isolated build fetches.
PIP_SELF := $(PY) -m pip install -q --no-deps --no-build-isolation -e .
PYTEST := $(PY) -m pytest -q -p no:cacheprovider

.PHONY: install install-runtime system-deps run test test-unit test-latest soak chaos bench fuzz lint typecheck \
	format proto lock clean image docs

# The stamps follow the compiled sources too: an edited .pyx or .pxi is rebuilt by the next install.
CYTHON_SOURCES := $(wildcard mixer/*.pyx mixer/*.pxi mixer/wire/*.pyx mixer/wire/*.pxi mixer/spans/*.pyx mixer/spans/*.pxi)
$(RUNTIME_STAMP): $(LOCK_RUNTIME) pyproject.toml $(CYTHON_SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_LOCKED) -r $(LOCK_RUNTIME)
	$(PIP_SELF)
	$(PY) -m pip check
	touch $@

$(DEV_STAMP): $(LOCK_DEV) pyproject.toml $(CYTHON_SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_LOCKED) -r $(LOCK_DEV)
	$(PIP_SELF)
	$(PY) -m pip check
	touch $@ $(RUNTIME_STAMP)

install-runtime: $(RUNTIME_STAMP)
install: $(DEV_STAMP)

# Real backends the tests start and stop themselves (Debian packages; CI runs as root).
# tool=Debian package
SYSTEM_TOOLS := promtool=prometheus prometheus=prometheus redis-server=redis-server nginx=nginx chromium=chromium chromedriver=chromium-driver
system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do tool=$${pair%%=*}; pkg=$${pair#*=}; \
		command -v $$tool >/dev/null || PATH="$$PATH:/usr/sbin" command -v $$tool >/dev/null || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing backends:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

run: $(RUNTIME_STAMP)
	$(VENV)/bin/mixer serve

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	@# The import contracts of pyproject.toml ([tool.importlinter], docs/architecture.md).
	$(VENV)/bin/lint-imports --no-cache

format: $(DEV_STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(DEV_STAMP)
	$(VENV)/bin/mypy

# The whole suite, as CI runs it: real Redis, Kafka (Tansu), Prometheus and nginx.
test: $(DEV_STAMP) system-deps lint
	$(PYTEST) -m "not slow"

# For a laptop: no root, no apt, no backend process (tests that start Redis, Tansu, Prometheus,
# promtool or nginx are deselected by the `backends` marker, set in tests/conftest.py).
test-unit: $(DEV_STAMP)
	$(PYTEST) -m "not slow and not backends"

# The suite against the newest releases inside pyproject's ranges, in a venv of its own: what a
# `make lock` would move us to. Not part of CI; run it before refreshing the lock.
LATEST := .venv-latest
test-latest: system-deps
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip setuptools
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[dev]'
	$(LATEST)/bin/python -m pip list --format=freeze > $(LATEST)/versions.txt
	$(LATEST)/bin/ruff check .
	$(LATEST)/bin/ruff format --check .
	$(LATEST)/bin/mypy
	$(LATEST)/bin/python -m pytest -q -p no:cacheprovider -m "not slow" \
		--deselect tests/test_lock.py::test_the_running_environment_is_the_locked_one

# Refresh both locks to the newest releases inside pyproject's ranges (LOCK_UPGRADE= keeps the
# current pins and only adds what pyproject newly asks for). The runtime lock constrains the dev one.
LOCK_UPGRADE ?= --upgrade
PIP_COMPILE := $(VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links --no-emit-trusted-host $(LOCK_UPGRADE)
# Needs only the locked pip-tools, not an install of the project: pyproject may already ask for
# something the current lock lacks.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_LOCKED) -r $(LOCK_DEV)
	$(PIP_COMPILE) -o $(LOCK_RUNTIME) pyproject.toml requirements/bootstrap.in
	$(PIP_COMPILE) --extra dev -o $(LOCK_DEV) pyproject.toml requirements/bootstrap.in requirements/dev.in

# The long no-loss runs (20 s backend outages); `make test` runs their short forms (3 s).
soak: $(DEV_STAMP) system-deps
	$(PYTEST) -m slow
	$(PY) bench/rss_soak.py --minutes 5
	MIXER_SOAK=1 $(PYTEST) tests/e2e/test_no_loss.py

# The chaos suite's long form (tests/chaos: 20 s outages, 100 reloads; figures quoted in
# docs/reliability.md, written to build/chaos/). `make test` runs its short form. The full-disk
# scenario mounts a small tmpfs, so this needs root, as CI has.
chaos: $(DEV_STAMP) system-deps
	MIXER_CHAOS=full $(PYTEST) -m chaos tests/chaos

# Benchmarks; results are quoted in docs/performance.md.
# Every bench, the side-by-side comparison first (docs/performance.md); the suite runs their short forms.
bench: $(DEV_STAMP) system-deps
	$(PY) bench/sidebyside.py
	$(PY) bench/wire_decode.py
	$(PY) bench/access_log_line.py
	$(PY) bench/span_encoding.py
	$(PY) bench/check_path.py
	$(PY) bench/status_page.py
	$(PY) bench/workers_scaling.py
	$(PY) bench/rss_soak.py
	$(PY) bench/runtime_dispatch.py
	$(PY) bench/check_throughput.py
	$(PY) bench/report_fanout.py
	$(PY) bench/redis_cluster.py
	$(PY) bench/delivery_ack.py

# The server image (docs/deploy.md); needs Docker with BuildKit. The tests in tests/deploy check the
# Dockerfile and build and run what it installs without Docker.
IMAGE ?= mesh-mixer:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
image:
	docker build -f deploy/container/Dockerfile -t $(IMAGE) .

# Every fuzz target under atheris, each in its own process: FUZZ_RUNS inputs, none over 1 s; crash
# inputs land in build/fuzz/artifacts. `make test` runs the short form (docs/fuzzing.md).
FUZZ_RUNS ?= 100000
FUZZ_JOBS ?= 1
fuzz: $(DEV_STAMP)
	nice $(PY) -m tests.fuzz.run --all --runs $(FUZZ_RUNS) --timeout 1 --jobs $(FUZZ_JOBS)

# The documentation site, into site/ (git-ignored). --strict: a broken link or a warning fails it.
# The adapter pages and the configuration reference are generated from the code (docs/hooks/).
docs: $(DEV_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --clean --site-dir site

proto: $(DEV_STAMP)
	$(PY) -m mixer.proto.build

clean:
	rm -rf $(VENV) $(LATEST) site .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info
