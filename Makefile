# mixprep: every target builds its own environment first, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

# Dry runs on the bundled samples: sizes that fit them (override any of these on the command line).
DATA_ROOT     ?= samples
OUT           ?= out
CACHE         ?= $(OUT)/cache
STAGE1_TOKENS ?= 400000
STAGE2_TOKENS ?= 1000000
SHARDS        ?= 4
RUNNER        ?= DirectRunner
BEAM_ARGS     ?=
PYTEST_ARGS   ?=
MIXPREP        = $(BIN)/mixprep
RUN_FLAGS      = --data-root $(DATA_ROOT) --cache $(CACHE) --shards $(SHARDS) --runner=$(RUNNER) $(BEAM_ARGS)

.PHONY: venv test samples tokenizer stage1-mixture stage2-mixture dry-run bench clean

venv: $(STAMP)

$(STAMP): setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,aws]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

samples: $(STAMP)
	$(BIN)/python scripts/make_samples.py --out samples --bad-out tests/data/bad

tokenizer: $(STAMP)
	$(BIN)/python scripts/train_tokenizer.py --data-root samples --out tokenizer/tokenizer.json

stage1-mixture: $(STAMP)
	$(MIXPREP) run --mixture mixtures/stage1.yaml --out $(OUT)/stage1 --total-tokens $(or $(TOTAL_TOKENS),$(STAGE1_TOKENS)) $(RUN_FLAGS)
	$(MIXPREP) verify $(OUT)/stage1

stage2-mixture: $(STAMP)
	$(MIXPREP) run --mixture mixtures/stage2.yaml --out $(OUT)/stage2 --total-tokens $(or $(TOTAL_TOKENS),$(STAGE2_TOKENS)) $(RUN_FLAGS)
	$(MIXPREP) verify $(OUT)/stage2

dry-run: stage1-mixture stage2-mixture

clean:
	rm -rf $(OUT) .pytest_cache
