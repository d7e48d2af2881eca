# mixprep: every target builds its own environment first, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

# Dry runs on the bundled samples: sizes that fit them (override any of these on the command line).
DATA_ROOT     ?= samples
OUT           ?= out
CACHE         ?= $(OUT)/cache
STAGE1_TOKENS ?= 1000000
STAGE2_TOKENS ?= 2000000
SHARDS        ?= 4
# Dry runs use the bundled test tokenizer (`--tokenizer small`); the mixtures name GPT-NeoX-20B's.
TOKENIZER     ?= small
RUNNER        ?= DirectRunner
DASK_SCHEDULER ?=
BEAM_ARGS     ?=
PYTEST_ARGS   ?=
MIXPREP        = $(BIN)/mixprep
RUN_FLAGS      = --data-root $(DATA_ROOT) --cache $(CACHE) $(if $(SHARDS),--shards $(SHARDS)) --runner=$(RUNNER) \
                 $(if $(TOKENIZER),--tokenizer $(TOKENIZER)) \
                 $(if $(DASK_SCHEDULER),--dask_client_address=$(DASK_SCHEDULER)) $(BEAM_ARGS)
size_flag      = $(if $(or $(TOTAL_TOKENS),$(1)),--total-tokens $(or $(TOTAL_TOKENS),$(1)))
EXTRA_DEPS     =

# The same targets on Dataflow: make stage1-mixture RUNNER=DataflowRunner PROJECT=p REGION=r BUCKET=b
# (data under gs://BUCKET/data in the hub layout; caches and mixtures written under gs://BUCKET/).
# Sizes then come from the mixture files (1T / 100B tokens) unless TOTAL_TOKENS / SHARDS say otherwise.
ifeq ($(RUNNER),DataflowRunner)
DATA_ROOT     := gs://$(BUCKET)/data
OUT           := gs://$(BUCKET)/out
CACHE         := gs://$(BUCKET)/cache
STAGE1_TOKENS :=
STAGE2_TOKENS :=
SHARDS        :=
TOKENIZER     :=
EXTRA_DEPS     = gcp-deps
RUN_FLAGS     += --project=$(PROJECT) --region=$(REGION) --temp_location=gs://$(BUCKET)/tmp \
                 --staging_location=gs://$(BUCKET)/staging --setup_file=./setup.py
endif

.PHONY: venv lock check-newest gcp-deps lint test samples tokenizer stage1-mixture stage2-mixture dry-run bench bench-scale fuzz clean

venv: $(STAMP)

# Exactly the versions the tests ran on: every package pinned by requirements-lock.txt (`make lock`
# writes it again from setup.cfg's ranges; `make check-newest` tries the newest releases they allow).
LOCK   = requirements-lock.txt
EXTRAS = aws,bench,dask,fast,report,test,trainers

$(STAMP): setup.cfg setup.py $(LOCK) scripts/install_jemalloc.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c $(LOCK) --upgrade pip
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[$(EXTRAS)]'
	scripts/install_jemalloc.sh $(VENV)
	touch $(STAMP)

lock:
	$(PYTHON) scripts/deps.py lock

# The smoke set (pipeline-construction tests, both dry runs, verify) in a venv of the newest releases
# setup.cfg allows, as `pip install mixprep` gets them today; one line names a release that breaks us.
check-newest:
	$(PYTHON) scripts/deps.py check-newest

# ruff.toml says what the lint checks (pyflakes, pycodestyle, import order; 120 columns).
lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

samples: $(STAMP)
	$(BIN)/python scripts/make_samples.py --out samples --bad-out tests/data/bad

tokenizer: $(STAMP)
	$(BIN)/python scripts/train_tokenizer.py --data-root samples --out tokenizer/tokenizer.json

gcp-deps: $(STAMP)
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[gcp]'

stage1-mixture: $(STAMP) $(EXTRA_DEPS)
	$(MIXPREP) run --mixture mixtures/stage1.yaml --out $(OUT)/stage1 $(call size_flag,$(STAGE1_TOKENS)) $(RUN_FLAGS)
	$(MIXPREP) verify $(OUT)/stage1

stage2-mixture: $(STAMP) $(EXTRA_DEPS)
	$(MIXPREP) run --mixture mixtures/stage2.yaml --out $(OUT)/stage2 $(call size_flag,$(STAGE2_TOKENS)) $(RUN_FLAGS)
	$(MIXPREP) verify $(OUT)/stage2

dry-run: stage1-mixture stage2-mixture

# Tokenizing speed and memory (docs/PERFORMANCE.md): builds a corpus of BENCH_MB MB of real text once
# under BENCH_DIR (outside the repo), then raw encoders vs `mixprep run` on 2 and 1 workers.
BENCH_MB    ?= 300
BENCH_REPEAT ?= 1
BENCH_DIR   ?= $(HOME)/.cache/mixprep-bench
BENCH_ARGS  ?=
bench: $(STAMP)
	$(BIN)/python scripts/bench.py --mb $(BENCH_MB) --dir $(BENCH_DIR) --repeat $(BENCH_REPEAT) $(BENCH_ARGS)

# Millions of documents: wall time and peak RSS per phase at SCALE_DOCS and 4x that (docs/SCALING.md).
# SCALE_DUPLICATES=K: every K-th document an exact copy, removed by exact dedup (its resolution's memory).
SCALE_DOCS ?= 5000000
SCALE_DUPLICATES ?= 0
bench-scale: $(STAMP)
	$(BIN)/python scripts/bench.py --scale $(SCALE_DOCS) --scale-duplicates $(SCALE_DUPLICATES) --dir $(BENCH_DIR)

# A long fuzzing campaign (not part of `make test`): config loader and .idx/.bin reader.
FUZZ_EXAMPLES ?= 20000
fuzz: $(STAMP)
	MIXPREP_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -p no:cacheprovider \
	    tests/test_config.py tests/test_mmidx.py -k "fuzz or corruption_never"

clean:
	rm -rf $(OUT) .pytest_cache
