# Entry points for researchers and CI. Every target runs with $(PYTHON): the project's .venv
# by default, or your own environment with `make ... PYTHON=/path/to/python`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PYTHON ?= $(VENV)/bin/python
UPSTREAM ?= yolov7
PIP_INSTALL = $(PYTHON) -m pip install --progress-bar on -c constraints.txt

# The project's own environment is created on demand; a PYTHON you name is used as it is.
ifeq ($(PYTHON),$(VENV)/bin/python)
ENV_STAMP := $(VENV)/.kit-env
DEV_STAMP := $(VENV)/.kit-dev
BENCH_STAMP := $(VENV)/.kit-bench
else
ENV_STAMP :=
DEV_STAMP :=
BENCH_STAMP :=
endif

# Make exports a variable given on its command line (or in the environment) to every recipe, and
# expands it to do so: a $(shell ...) in WEIGHTS would run even though no recipe uses it. These are
# read with $(value ...) only, and never exported under their own names.
unexport WEIGHTS SOURCE OUT CONFIG RUN NPROC UPSTREAM

# UPSTREAM and NPROC go into a command line: checked before any recipe runs (exit 2 with the fix).
# $(call kit_strip,TEXT,CHARS): TEXT without the characters CHARS (a list of single characters).
kit_strip = $(if $2,$(call kit_strip,$(subst $(firstword $2),,$1),$(wordlist 2,$(words $2),$2)),$1)
KIT_NAME_CHARS := a b c d e f g h i j k l m n o p q r s t u v w x y z 0 1 2 3 4 5 6 7 8 9 _ -
KIT_DIGITS := 0 1 2 3 4 5 6 7 8 9
KIT_ROOT := $(dir $(lastword $(MAKEFILE_LIST)))
# The upstreams' names: the top-level keys of upstreams.yaml.
kit_upstreams = $(shell sed -n 's/^\([a-z0-9_-][a-z0-9_-]*\):.*/\1/p' '$(KIT_ROOT)upstreams.yaml' 2>/dev/null)
KIT_BAD_UPSTREAM = UPSTREAM='$(value UPSTREAM)' is not the name of an upstream; pass one of \
	$(or $(kit_upstreams),the names in upstreams.yaml), e.g. UPSTREAM=yolov7
KIT_BAD_NPROC = NPROC='$(value NPROC)' is not a number of processes; pass digits only, 1 or more, \
	e.g. NPROC=2, or leave NPROC out for one process
kit_upstream_ok = $(and $(filter 1,$(words $(value UPSTREAM))),$(if $(strip \
	$(call kit_strip,$(value UPSTREAM),$(KIT_NAME_CHARS))),,ok),$(or $(if $(kit_upstreams),,ok),$(filter \
	$(value UPSTREAM),$(kit_upstreams))))
kit_nproc_ok = $(or $(if $(strip $(value NPROC)),,ok),$(and $(filter 1,$(words $(value NPROC))),$(if $(strip \
	$(call kit_strip,$(value NPROC),$(KIT_DIGITS))),,ok),$(strip $(subst 0,,$(value NPROC)))))
ifneq ($(filter cam refresh-patches,$(MAKECMDGOALS)),)
ifeq ($(kit_upstream_ok),)
$(error $(KIT_BAD_UPSTREAM))
endif
endif
ifneq ($(filter cam,$(MAKECMDGOALS)),)
ifeq ($(kit_nproc_ok),)
$(error $(KIT_BAD_NPROC))
endif
endif

.PHONY: help env dev-env setup-yolov3 setup-yolov5 setup-yolov7 setup-detectron2 status check-patches refresh-patches \
        setup-ultralytics cam demo eval audit report bench lint test test-unit test-process test-integration test-fast \
        fuzz clean-env

help:
	@echo "make setup-yolov7 | setup-yolov3 | setup-yolov5 | setup-detectron2   clone the pin, apply patches, install"
	@echo "make setup-ultralytics              its pinned sdist (sha256-checked), patches, editable install"
	@echo "make cam [UPSTREAM=yolov7] [WEIGHTS=...] [SOURCE=...] [OUT=...] [CONFIG=...] [NPROC=N] [ARGS='...']"
	@echo "make demo [UPSTREAM=yolov7] [ARGS='--iterations N']   train its demo detector on synthetic shapes"
	@echo "make eval [ARGS='...']              PG, EBPG, deletion/insertion, randomization per method x layers"
	@echo "make report RUN=<run folder>        index.html: the run's images, detections and maps, for a browser"
	@echo "make audit RUN=<run folder> [ARGS='--top 50 --layer NAME']   where a run's maps lie against their boxes"
	@echo "make status | check-patches | refresh-patches UPSTREAM=<name>"
	@echo "make test | test-unit | test-process | test-integration | bench   (test: lint and every tier)"
	@echo "make fuzz [ARGS='--seconds 600 --seed N']   fuzz the checkpoint loader and label readers (failing cases: runs/fuzz/)"

$(VENV)/.kit-env: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install --progress-bar on -c constraints.txt -e '.[setup]'
	touch $@

$(VENV)/.kit-dev: $(VENV)/.kit-env pyproject.toml constraints.txt upstreams.yaml
	$(VENV)/bin/python -m pip install --progress-bar on -c constraints.txt -e '.[dev]'
	$(VENV)/bin/python -m scripts install-requirements --all
	touch $@

env: $(ENV_STAMP)
ifneq ($(ENV_STAMP),)
else
	$(PIP_INSTALL) -e '.[setup]'
endif

dev-env: $(DEV_STAMP)
ifeq ($(DEV_STAMP),)
	$(PIP_INSTALL) -e '.[dev]'
	$(PYTHON) -m scripts install-requirements --all
endif

setup-yolov3 setup-yolov5 setup-yolov7 setup-detectron2 setup-ultralytics: setup-%: env
	$(PYTHON) -m scripts setup $*

status: $(ENV_STAMP)
	$(PYTHON) -m scripts status

check-patches: $(ENV_STAMP)
	$(PYTHON) -m scripts check-patches

refresh-patches: $(ENV_STAMP)
	$(PYTHON) -m scripts refresh-patches $(value UPSTREAM)

# WEIGHTS, SOURCE, OUT and CONFIG reach scripts/cam/launch.py verbatim: $(value) keeps make from expanding
# a $ in them and the shell reads them from the environment, quoted, so spaces, quotes, $HOME,
# backticks and ; are a file name's characters, never shell syntax. ARGS is split by the shell as
# typed (ARGS="--method gradcampp --conf-thres 0.4"; quote inside it as in a shell). NPROC=N runs
# N processes under torchrun (python -m torch.distributed.run --nproc-per-node N). UPSTREAM and NPROC
# were checked above, before any recipe.
cam: export KIT_CAM_WEIGHTS = $(value WEIGHTS)
cam: export KIT_CAM_SOURCE = $(value SOURCE)
cam: export KIT_CAM_OUT = $(value OUT)
cam: export KIT_CAM_CONFIG = $(value CONFIG)
cam: $(ENV_STAMP)
	$(PYTHON) -m scripts cam $(value UPSTREAM) --weights="$$KIT_CAM_WEIGHTS" --source="$$KIT_CAM_SOURCE" \
		--out="$$KIT_CAM_OUT" --config="$$KIT_CAM_CONFIG" --nproc="$(value NPROC)" -- $(ARGS)

# Trains with the yolov7 checkout's own Model and ComputeLoss (make setup-yolov7 first; UPSTREAM=yolov5
# or yolov3: yolov5n or yolov3-tiny with that checkout's), or with
# UPSTREAM=ultralytics YOLO11n with Ultralytics' own trainer; writes weights/demo/, data/demo/ and the
# copy kept in the repository, kit/upstreams/demo/.
demo: $(ENV_STAMP)
	$(PYTHON) -m scripts demo --upstream="$(value UPSTREAM)" --install $(ARGS)

eval: $(ENV_STAMP)
	$(PYTHON) -m scripts eval --upstream="$(value UPSTREAM)" $(ARGS)

# make audit RUN=runs/cam/yolov7/exp [ARGS='--top 50 --layer 75 --rank density']: docs/audit.md.
# RUN reaches python -m kit audit (kit.evaluation.audit) verbatim, as make cam's WEIGHTS do.
audit: export KIT_AUDIT_RUN = $(value RUN)
audit: $(ENV_STAMP)
	@test -n "$$KIT_AUDIT_RUN" || { echo "make audit needs RUN=<run folder>, e.g. RUN=runs/cam/yolov7/exp" >&2; exit 2; }
	$(PYTHON) -m kit audit "$$KIT_AUDIT_RUN" $(ARGS)

# make report RUN=runs/cam/yolov7/exp: index.html in the run folder, for any run, old ones too
# (docs/report.md). RUN reaches python -m kit report (kit.report.page) verbatim, as make audit's does.
report: export KIT_REPORT_RUN = $(value RUN)
report: $(ENV_STAMP)
	@test -n "$$KIT_REPORT_RUN" || { echo "make report needs RUN=<run folder>, e.g. RUN=runs/cam/yolov7/exp" >&2; exit 2; }
	$(PYTHON) -m kit report "$$KIT_REPORT_RUN"

$(VENV)/.kit-bench: $(VENV)/.kit-env pyproject.toml constraints.txt
	$(VENV)/bin/python -m pip install --progress-bar on -c constraints.txt -e '.[bench]'
	touch $@

bench: $(BENCH_STAMP)
ifeq ($(BENCH_STAMP),)
	$(PIP_INSTALL) -e '.[bench]'
endif
	$(PYTHON) -m scripts bench $(ARGS)

lint: dev-env
	$(PYTHON) -m ruff check kit scripts entrypoints tests
	$(PYTHON) -m ruff format --check kit scripts entrypoints tests
	$(PYTHON) -m mypy

# The test command of the README and of CI: lint, then every tier in one pytest run. Two pytest
# workers (pytest-xdist), a test file each at a time: the integration tests are mostly one-process
# subprocesses, so one worker leaves a core idle (17:51 -> 11:16 on 2 cores). TEST_WORKERS=0 runs in
# one process. The tiers (tests/unit, tests/process, tests/integration; CONTRIBUTING.md, Tests) run
# alone with their own target: test-unit is the fast one (no child process, no upstream, no browser).
TEST_WORKERS ?= 2
PYTEST = $(PYTHON) -m pytest -q -ra -n $(TEST_WORKERS) --dist loadfile
test: lint
	$(PYTEST) --durations=15

test-unit: dev-env
	$(PYTEST) -m unit tests/unit

test-process: dev-env
	$(PYTEST) -m process tests/process

test-integration: dev-env
	$(PYTEST) --durations=15 -m integration tests/integration

# The unit and process tiers: everything but the real upstreams.
test-fast: dev-env
	$(PYTEST) -m "not integration" tests/unit tests/process

# make test runs a fixed seed's few thousand cases (tests/unit/test_fuzz.py); this runs the same
# fuzzer for longer (default 120 s per kind), from a new seed unless ARGS gives one.
fuzz: dev-env
	$(PYTHON) -m tests.fuzz $(ARGS)

clean-env:
	rm -rf $(VENV)
