# Two commands do everything on a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= $(or $(WELLREAD_DATA),../shared/data)
RUN    ?= runs/quickstart

.PHONY: install run test lint clean

# The stamp is rebuilt whenever pyproject.toml changes, so `make` re-installs exactly when needed.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The main job, offline: learn a WordPiece vocabulary on real text, build Tiny on it, save it in the
# Hugging Face layout, and encode a sentence with it.
run: install
	@test -d $(DATA)/text || { echo "make run: no text under $(DATA)/text; set WELLREAD_DATA=DIR (a folder with text/*.txt|*.gz)"; exit 1; }
	$(BIN)/wellread models
	$(BIN)/wellread vocab train $(DATA)/text/*.gz --size 8000 --out $(RUN)/vocab --overwrite
	$(BIN)/wellread init tiny --vocab $(RUN)/vocab --out $(RUN)/tiny --seed 0 --overwrite
	$(BIN)/wellread vocab encode --vocab $(RUN)/tiny "Well-read students learn better: pre-trained distillation of compact BERTs."

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check wellread tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
