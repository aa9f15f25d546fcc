# `make demo` and `make test` set everything up from constraints.txt and run; nothing is installed by hand.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := tf-cpu,beam,serve,launch,dev
DEMO_DIR ?= demo-output

.PHONY: demo test bench venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "pip==26.3"
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

demo: venv
	$(BIN)/captcha-pipeline generate --output $(DEMO_DIR)/data -d --length 4 \
	  --train-examples 2000 --validation-examples 200 --test-examples 200 --holdout-labels --overwrite \
	  --runner DirectRunner --direct_running_mode multi_processing --direct_num_workers 2
	$(BIN)/captcha-pipeline inspect $(DEMO_DIR)/data --contact-sheet $(DEMO_DIR)/contact_sheet.png

test: venv
	$(BIN)/python -m pytest -q tests

bench: venv
	$(BIN)/python bench/generate.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
