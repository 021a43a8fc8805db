# Two entry points that do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint format docs bench reproduce weights install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt setup.py src/masquerade/_native.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,distributed,test,lint,docs]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/masquerade demo

# The linter, the type checker and the documentation build first (any finding or warning fails), then the tests.
# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: lint docs
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

LINTED := src tests benchmarks examples docs
lint: $(STAMP)
	$(BIN)/ruff format --check --quiet $(LINTED) || { echo "make lint: run make format" >&2; exit 1; }
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy

# Formats the code and fixes what the linter can fix by itself (import order): run it before a commit.
format: $(STAMP)
	$(BIN)/ruff format --quiet $(LINTED)
	$(BIN)/ruff check --fix --quiet $(LINTED)

# The documentation site, offline, into site/ (open site/index.html); any warning fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict --quiet --site-dir site

# The challenge attack's learned image prior, shipped in the package: trained on challenges simulated from
# CIFAR-10 *training* images with public patches from ImageNet photos (about 1 hour on 2 cores; resumes).
AUX    ?= ../shared/data/cifar10-train-20k.npz
PHOTOS ?= ../shared/data/imagenet-sample
weights: $(STAMP)
	$(BIN)/masquerade challenge prepare --aux $(AUX) --public $(PHOTOS) \
		--out src/masquerade/weights/instahide_challenge_prior.safetensors

# The speed suite: one table of our figures against the peers' (libraries and the papers' published code, each
# in its own environment under .bench/), cold and warm, and the cost curves (about 15 minutes; BENCH_ARGS=--quick
# for a few). The paper reproductions (hours) are in benchmarks/reproductions/ (see its README).
BENCH_STAMP := $(VENV)/.bench-installed
BENCH_ARGS ?=
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[bench]'
	@touch $@

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/speed/suite.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build site *.egg-info src/*.egg-info
