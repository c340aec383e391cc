# dogbreed: `make demo` runs the main job, `make test` the whole suite.
# Both set themselves up (virtual environment, packages) on a fresh machine.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORK ?= artifacts

.PHONY: help install lint imports format unit test demo bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt constraints-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24" "setuptools>=68,<81" wheel
	$(BIN)/pip install --quiet -c constraints.txt -c constraints-dev.txt -e ".[train,serve,local,dev]"
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

imports: $(STAMP)  ## the import contracts between the package's parts (import-linter)
	$(BIN)/lint-imports --no-cache

unit: lint imports  ## lint, import contracts and the unit tier: in-process, no Docker, a minute or two
	$(BIN)/pytest -q tests/unit

test: unit docs build  ## everything: the unit tier and the docs first, then both images and the integration tier
	@containers/test-deps.sh
	$(BIN)/pytest -q tests/integration

.PHONY: docs
docs: $(STAMP)  ## the documentation site (docs/, mkdocs.yml) into build/site; fails on any warning
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir build/site

demo: $(STAMP) build  ## the main job in containers: train image -> serve image -> classify
	rm -rf $(WORK)/demo
	$(BIN)/dogbreed data synth --out $(WORK)/demo/data --classes 5 --per-class 60 --seed 0
	$(MAKE) --no-print-directory train-local OUT=$(WORK)/demo/opt_ml DATA=$(WORK)/demo/data \
	  HPS='{"arch": "resnet18", "weights": "none", "epochs": "3", "batch-size": "8", "lr": "0.001"}'
	@containers/demo-serve.sh $(SERVE_IMAGE):latest $(WORK)/demo/opt_ml/model.tar.gz $(BIN)/dogbreed \
	  $$(ls $(WORK)/demo/data/test/*/*.jpg | awk 'NR % 4 == 1')
	@echo "model:   $(WORK)/demo/opt_ml/model.tar.gz  (model.onnx, model.pth, metadata.json)"
	@echo "reports: $(WORK)/demo/opt_ml/output/data (metrics.json, training_curves.png, resources.png, confusions.json)"

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

.PHONY: engine build build-train build-serve build-context

engine:  ## make sure a Docker engine answers (starts one where it can)
	@containers/engine.sh

# What the builds take besides the tree: the build host's CA bundle (used in build stages
# only, never in an image) and each image's requirements from pyproject.toml's extras.
build-context:
	@mkdir -p containers/build
	@if [ -f /etc/ssl/certs/ca-certificates.crt ]; then cp /etc/ssl/certs/ca-certificates.crt containers/build/host-ca.crt; else : > containers/build/host-ca.crt; fi
	@$(PYTHON) containers/requirements.py serve > containers/build/requirements-serve.txt
	@$(PYTHON) containers/requirements.py train sagemaker > containers/build/requirements-train.txt

build: build-train build-serve  ## build both images

build-train: engine build-context  ## build the train image (torch, sagemaker-training, dogbreed)
	$(DOCKER_BUILD) -f containers/train/Dockerfile -t $(TRAIN_IMAGE):$(TAG) -t $(TRAIN_IMAGE):latest .

build-serve: engine build-context  ## build the serve image (Java, MMS, ONNX Runtime, dogbreed; no torch)
	$(DOCKER_BUILD) -f containers/serve/Dockerfile -t $(SERVE_IMAGE):$(TAG) -t $(SERVE_IMAGE):latest .

# ---- running the images locally (`dogbreed local`: the Docker SDK) -----------
# OUT gets model.tar.gz, output/ (reports) and hosts/algo-i (each host's /opt/ml tree).
OPT_ML ?= $(WORK)/opt_ml
OUT ?= $(OPT_ML)
DATA ?= $(WORK)/data
HPS ?= {"arch": "resnet18", "weights": "none", "epochs": "2", "batch-size": "16"}
HOSTS ?= 1
PORT ?= 8080

.PHONY: train-local serve-local push sbom

sbom: build  ## both images' CycloneDX SBOMs (their Python environments) into $(WORK)/
	@mkdir -p $(WORK)
	@for pair in train:$(TRAIN_IMAGE) serve:$(SERVE_IMAGE); do \
	  image=$${pair#*:}:latest; \
	  path=$$(docker image inspect -f '{{ index .Config.Labels "org.opencontainers.image.sbom" }}' $$image); \
	  docker run --rm --entrypoint cat $$image $$path > $(WORK)/sbom-$${pair%%:*}.cdx.json; \
	  echo "$(WORK)/sbom-$${pair%%:*}.cdx.json  ($$image:$$path)"; \
	done

train-local: build-train  ## train image on synthetic data, HOSTS=N instances, as SageMaker runs it
	@test -d $(DATA)/train || $(BIN)/dogbreed data synth --out $(DATA) --classes 5 --per-class 40
	$(BIN)/dogbreed local train --image $(TRAIN_IMAGE):latest --hosts $(HOSTS) \
	  --data $(DATA) --out $(OUT) --hp-json '$(HPS)'

serve-local: build-serve  ## serve image on train-local's model.tar.gz, on port $(PORT) (Ctrl-C stops)
	$(BIN)/dogbreed local serve --image $(SERVE_IMAGE):latest --model $(OUT)/model.tar.gz --port $(PORT)

push: build  ## push both images (ECR, or REGISTRY=host:port); IMAGES= picks some
	containers/push.sh $(TAG) $(or $(IMAGES),$(TRAIN_IMAGE) $(SERVE_IMAGE))

LAMBDA_ZIP ?= $(WORK)/lambda.zip

.PHONY: lambda-zip
lambda-zip: $(STAMP)  ## the Lambda function's zip (one file, standard library + boto3), byte for byte the one `aws lambda` publishes
	@mkdir -p $(dir $(LAMBDA_ZIP))
	@$(BIN)/python -c 'import sys; from dogbreed.aws.functions import lambda_zip; open(sys.argv[1], "wb").write(lambda_zip())' $(LAMBDA_ZIP)
	@echo "$(LAMBDA_ZIP): $$(wc -c < $(LAMBDA_ZIP)) bytes, sha256 $$(sha256sum $(LAMBDA_ZIP) | cut -c1-16)"
