# Two commands do everything on a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= $(or $(WELLREAD_DATA),../shared/data)
RUN    ?= runs/recipe
BUDGET ?= 10m
SEED   ?= 0
# when make began: `make run`'s time budget counts the install too
START  := $(shell date +%s)

.PHONY: install run test lint clean

# The stamp is rebuilt whenever pyproject.toml changes, so `make` re-installs exactly when needed.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The main job: the paper's recipe end to end (`wellread recipe`, docs/recipe.md): corpus, MLM
# pre-training of Tiny, the all-MiniLM-L6-v2 teacher fine-tuned, Pre-trained Distillation, the grid,
# evaluation and a report (RUN/report/report.md, .html), planned to fit BUDGET. On real data under DATA
# (glue/ and text/) it runs offline; without them, where the Hugging Face hub answers, it takes GLUE and
# the published students from there (`--source hub`); otherwise it says in one line what to do. A budget
# under 45 minutes runs the short plan (STS-B, copy-pair pre-training; the report says each choice and why);
# SEED=1 runs the recipe's second seed. Running
# it again skips every finished stage; `make run BUDGET=60m` is the hour-long run.
run: install
	@if test -d $(DATA)/glue -a -d $(DATA)/text; then \
		$(BIN)/wellread recipe --data $(DATA) --time-budget $(BUDGET) --seeds $(SEED) --started-at $(START) --out $(RUN); \
	elif $(BIN)/python -c "from wellread.recipe.online import hub_reachable as r; raise SystemExit(not r())"; then \
		echo "make run: no glue/ and text/ under $(DATA): GLUE and the published students come from the hub (--source hub)"; \
		$(BIN)/wellread recipe --source hub --time-budget $(BUDGET) --seeds $(SEED) --started-at $(START) --out $(RUN); \
	else \
		echo "make run: no glue/ and text/ under $(DATA), and no network to fetch them from the hub; set WELLREAD_DATA=DIR (holding glue/<Task>/ and text/*.gz), or run where huggingface.co answers"; exit 1; \
	fi

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check wellread tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
