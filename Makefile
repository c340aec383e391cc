# dogbreed: `make demo` runs the main job, `make test` the whole suite.
# Both set themselves up (virtual environment, packages) on a fresh machine.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORK ?= artifacts

.PHONY: help install lint format test demo bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24" "setuptools>=68,<81" wheel
	$(BIN)/pip install --quiet -c constraints.txt -e ".[train,serve,dev]"
	# Test images only: foolbox's wheel carries 20 real ImageNet photos (two dogs).
	$(BIN)/pip install --quiet --no-deps foolbox==3.3.4
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package with pinned dependencies

lint: $(STAMP)  ## ruff lint and format check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(STAMP)  ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

test: lint  ## lint, then the whole test suite
	$(BIN)/pytest -q

demo: $(STAMP)  ## synthetic data -> train on CPU -> classify held-out images
	rm -rf $(WORK)/demo
	$(BIN)/dogbreed data synth --out $(WORK)/demo/data --classes 5 --per-class 40 --seed 0
	$(BIN)/dogbreed train --data $(WORK)/demo/data --model-dir $(WORK)/demo/model \
	  --output-dir $(WORK)/demo/output --checkpoint-dir $(WORK)/demo/checkpoints \
	  --arch resnet18 --weights none --epochs 3 --batch-size 16 --lr 0.003 --device cpu
	$(BIN)/dogbreed predict --model-dir $(WORK)/demo/model $$(ls $(WORK)/demo/data/test/*/*.jpg | awk 'NR % 2 == 1')
	@echo "model:   $(WORK)/demo/model  (model.onnx, model.pth, metadata.json)"
	@echo "reports: $(WORK)/demo/output (metrics.json, training_curves.png, resources.png, confusions.json)"

bench: $(STAMP)  ## training throughput: our loop vs the course loop
	$(BIN)/python bench/train_throughput.py

clean:  ## remove build outputs and demo artifacts (keeps .venv)
	rm -rf $(WORK) build dist .pytest_cache .ruff_cache

# ---- container images ------------------------------------------------------
TRAIN_IMAGE ?= dogbreed-train
SERVE_IMAGE ?= dogbreed-serve
TAG ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
PUBLIC_BASE ?= python:3.11-slim-bookworm
DOCKER_BUILD = docker build --network host --build-arg BASE_IMAGE=$$(containers/base-image.sh $(PUBLIC_BASE))

.PHONY: engine build build-train build-serve build-ca

engine:  ## make sure a Docker engine answers (starts one where it can)
	@containers/engine.sh

build-ca:
	@mkdir -p containers/build
	@if [ -f /etc/ssl/certs/ca-certificates.crt ]; then cp /etc/ssl/certs/ca-certificates.crt containers/build/host-ca.crt; else : > containers/build/host-ca.crt; fi

build: build-train build-serve  ## build both images

build-train: engine build-ca  ## build the train image (torch, sagemaker-training, dogbreed)
	$(DOCKER_BUILD) -f containers/train/Dockerfile -t $(TRAIN_IMAGE):$(TAG) -t $(TRAIN_IMAGE):latest .

build-serve: engine build-ca  ## build the serve image (Java, MMS, ONNX Runtime, dogbreed; no torch)
	$(DOCKER_BUILD) -f containers/serve/Dockerfile -t $(SERVE_IMAGE):$(TAG) -t $(SERVE_IMAGE):latest .
