# `make demo` and `make test` each set up everything they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lindit-installed

.PHONY: demo test test-fast install clean benchmarks bench-bf16 bench-gpu mutants

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

# Half precision on this CPU (issue 23): accuracy against float64, where a block's time goes per dtype, bf16 against
# float32 interleaved (teacher / student ratios in each dtype), MM-EDiT attention memory at 4096 px. About 3 h on 2 cores.
bench-bf16: $(STAMP)
	$(VENV)/bin/lindit bench precision --out docs/bench/precision
	$(VENV)/bin/lindit bench profile --preset pixart-sigma --methods teacher edit --size 2048 --rounds 3 --out docs/bench/profile-pixart-2048
	$(VENV)/bin/lindit bench profile --preset sd35-medium --methods teacher mm_edit --size 1024 --rounds 3 --out docs/bench/profile-sd35-1024
	$(VENV)/bin/lindit bench paired --preset pixart-sigma --methods teacher edit --size 1024 --rounds 9 --dtype float32 bfloat16 --out docs/bench/paired-bf16-pixart-1024
	$(VENV)/bin/lindit bench paired --preset sd35-medium --methods teacher mm_edit --size 1024 --rounds 5 --dtype float32 bfloat16 --out docs/bench/paired-bf16-sd35-1024
	$(VENV)/bin/lindit bench paired --preset pixart-sigma --methods teacher edit --size 2048 --rounds 5 --dtype float32 bfloat16 --out docs/bench/paired-bf16-pixart-2048
	$(VENV)/bin/lindit bench paired --preset sd35-medium --methods teacher mm_edit --size 2048 --rounds 3 --dtype float32 bfloat16 --out docs/bench/paired-bf16-sd35-2048
	$(VENV)/bin/lindit bench hybrid --size 4096 --rounds 3 --out docs/bench/hybrid-4096

# EDiT Table 3 on one CUDA GPU: PixArt-Sigma (teacher, SANA, EDiT) and SD3.5-Medium (teacher, SANA-MM-DiT, MM-EDiT) at
# 1024-8192 px in bfloat16, CUDA-event timing after a warm-up, one block of each type (the forward estimated as in the
# CPU runs). Sized for a few minutes on an A100/H100 (docs/BENCHMARKS.md); fails at once without a GPU.
bench-gpu: $(STAMP)
	$(VENV)/bin/lindit bench model --device cuda --dtype bf16 --baseline none --presets pixart-sigma sd35-medium --methods teacher sana edit sana_mmdit mm_edit --resolutions 1024 2048 4096 8192 --non-square none --repeats 5 --max-seconds 60 --no-attention --out docs/bench/gpu

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info demo-output
