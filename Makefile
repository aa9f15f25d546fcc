# `make demo` and `make test` set everything up from constraints.txt and run; nothing is installed by hand.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := tf-cpu,beam,inspect,serve,launch,dev
DEMO_DIR ?= demo-output

.PHONY: demo test bench venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "pip==26.3"
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

# The whole local path: Beam job -> inspect -> SageMaker contract run locally in Pipe mode -> evaluate -> predict.
demo: venv
	rm -rf $(DEMO_DIR)/jobs $(DEMO_DIR)/model $(DEMO_DIR)/samples
	$(BIN)/captcha-pipeline generate --output $(DEMO_DIR)/data -d --length 4 --image-format raw --store-size 60x50 \
	  --train-examples 30000 --validation-examples 1000 --test-examples 2000 --holdout-labels --overwrite \
	  --runner DirectRunner --direct_running_mode multi_processing --direct_num_workers 2
	$(BIN)/captcha-pipeline inspect $(DEMO_DIR)/data --contact-sheet $(DEMO_DIR)/contact_sheet.png
	$(BIN)/captcha-pipeline launch local $(DEMO_DIR)/data --output-path $(DEMO_DIR)/jobs --job-name demo \
	  --input-mode Pipe --shuffle-seed 1 --hp epochs=2 --hp batch-size=64 --hp learning-rate=3e-3
	mkdir -p $(DEMO_DIR)/model && tar -xzf $(DEMO_DIR)/jobs/demo/output/model.tar.gz -C $(DEMO_DIR)/model
	$(BIN)/captcha-pipeline evaluate --model-dir $(DEMO_DIR)/model --data $(DEMO_DIR)/data/test \
	  --report $(DEMO_DIR)/evaluation.json --gallery $(DEMO_DIR)/errors.png --samples $(DEMO_DIR)/samples
	$(BIN)/captcha-pipeline predict --model-dir $(DEMO_DIR)/model $(DEMO_DIR)/samples

test: venv
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests

bench: venv
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/input_pipeline.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
