# Mesh Mixer: set-up, run and test. Every target installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install system-deps run test soak bench lint typecheck format proto clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Real backends the tests start and stop themselves (Debian packages; CI runs as root).
# tool=Debian package
SYSTEM_TOOLS := promtool=prometheus prometheus=prometheus redis-server=redis-server nginx=nginx
system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do tool=$${pair%%=*}; pkg=$${pair#*=}; \
		command -v $$tool >/dev/null || PATH="$$PATH:/usr/sbin" command -v $$tool >/dev/null || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing backends:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

run: $(STAMP)
	$(VENV)/bin/mixer serve

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP) system-deps lint
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

# The long no-loss runs (20 s backend outages); `make test` runs their short forms (3 s).
soak: $(STAMP) system-deps
	$(PY) -m pytest -q -p no:cacheprovider -m slow
	MIXER_SOAK=1 $(PY) -m pytest -q -p no:cacheprovider tests/e2e/test_no_loss.py

# Benchmarks; results are quoted in docs/performance.md.
bench: $(STAMP) system-deps
	$(PY) bench/wire_decode.py
	$(PY) bench/runtime_dispatch.py
	$(PY) bench/check_throughput.py
	$(PY) bench/report_fanout.py

proto: $(STAMP)
	$(PY) -m mixer.proto.build

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info
