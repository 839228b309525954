# `make demo` and `make test` each set up everything they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lindit-installed

.PHONY: demo test test-fast install clean benchmarks mutants

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: its CPU build is on this machine's disk; a bare `torch` pulls CUDA.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test,deploy]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lindit demo --out demo-output --overwrite

test: $(STAMP)
	$(PY) -m pytest -q

# Skips the slow end-to-end checks; CI runs everything.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# Planted slips in the papers' equations (tests/mutants/slips.py), each run against its tests on a temporary
# copy of src/; writes the result table into docs/TESTING.md (about 15 min on 2 cores; not part of CI).
mutants: $(STAMP)
	$(PY) tests/mutants/run.py --record docs/TESTING.md

# The measurements behind docs/BENCHMARKS.md (hours on 2 cores: the 4096 px teacher blocks take minutes each; run on a quiet machine).
benchmarks: $(STAMP)
	$(VENV)/bin/lindit bench model --max-seconds 60 --repeats 3 --no-attention --out docs/bench/full
	$(VENV)/bin/lindit bench attention --max-seconds 200 --repeats 3 --out docs/bench/attention
	$(VENV)/bin/lindit bench model --presets pixart-sigma sd35-medium --methods teacher edit mm_edit --resolutions 1024 2048 4096 --non-square none --max-seconds 300 --repeats 3 --no-attention --out docs/bench/model
	$(VENV)/bin/lindit bench model --presets pixart-sigma sd35-medium --methods teacher edit mm_edit --resolutions 4096 --non-square none --max-seconds 3000 --repeats 1 --no-attention --out docs/bench/model-4096
	$(VENV)/bin/lindit bench model --presets pixart-sigma sd35-medium dit-xl-2 --methods lit sana linfusion sana_mmdit linear_mmdit_alpha --resolutions 4096 --non-square none --repeats 1 --max-seconds 400 --no-attention --out docs/bench/model-4096-linear
	$(VENV)/bin/lindit bench model --presets pixart-sigma --methods edit --resolutions 8192 --non-square none --repeats 1 --no-attention --out docs/bench/model-8192
	$(VENV)/bin/lindit bench model --presets pixart-sigma sd35-medium --methods teacher edit mm_edit --resolutions 1024 2048 --non-square none --repeats 3 --no-attention --out docs/bench/model-quiet
	$(VENV)/bin/lindit bench model --presets pixart-sigma sd35-medium --methods teacher edit edit:cf_reduction=8 mm_edit mm_edit:cf_reduction=8 --resolutions 1024 --non-square none --repeats 9 --no-attention --out docs/bench/model-1024
	$(VENV)/bin/lindit bench paired --preset pixart-sigma --methods teacher edit edit:cf_reduction=8 --size 1024 --rounds 15 --out docs/bench/paired-pixart-1024
	$(VENV)/bin/lindit bench paired --preset sd35-medium --methods teacher mm_edit mm_edit:cf_reduction=8 --size 1024 --rounds 15 --out docs/bench/paired-sd35-1024
	$(VENV)/bin/lindit bench paired --preset pixart-sigma --methods teacher edit --size 2048 --rounds 9 --out docs/bench/paired-pixart-2048
	$(VENV)/bin/lindit bench paired --preset sd35-medium --methods teacher mm_edit --size 2048 --rounds 5 --out docs/bench/paired-sd35-2048
	$(VENV)/bin/lindit bench parallel --preset pixart-sigma --method edit --size 2048x2048 --processes 1 2 --out docs/bench/parallel
	$(VENV)/bin/lindit bench targets docs/bench/model/bench.json docs/bench/model-4096/bench.json docs/bench/model-4096-linear/bench.json --memory docs/bench/model-8192/bench.json --paired docs/bench/paired-*/paired.json > docs/bench/targets.md.tmp && mv docs/bench/targets.md.tmp docs/bench/targets.md

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info demo-output
