# mixprep: every target builds its own environment first, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

DATA_ROOT    ?= samples
OUT          ?= out
CACHE        ?= $(OUT)/cache
TOTAL_TOKENS ?=
RUNNER       ?= DirectRunner
BEAM_ARGS    ?=
PYTEST_ARGS  ?=

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

clean:
	rm -rf $(OUT) .pytest_cache
