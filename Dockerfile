# One image, CPU or GPU by a build argument; either installs exactly what `make setup GPU=0|1` installs, then
# runs `make run` (dvc repro).
#   CPU (default):  docker build -t fmnist-pipeline .
#   GPU (NVIDIA):   docker build --build-arg GPU=1 -t fmnist-pipeline:gpu .   (TensorFlow's CUDA build)
# Volumes: data, models, metrics, reports and DVC's cache (with its run cache); README, "Docker", has the run
# command. dvc.lock, accuracy.json, plots/ and .checkpoints/ go with the container: the next one restores the
# finished stages (accuracy.json and plots/ included) from the run cache, but not an interrupted training's
# checkpoint. Layers: system packages, then Python dependencies from the lock files only, then the source;
# editing a .py rebuilds the last layers in seconds and never reinstalls TensorFlow.
FROM python:3.11-slim-bookworm AS image
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false TF_CPP_MIN_LOG_LEVEL=2
# System packages: what `make setup` installs, by running the same script (as root here), plus git and make.
COPY scripts/install-system-deps.sh /tmp/install-system-deps.sh
RUN apt-get update \
 && apt-get install -y --no-install-recommends git make \
 && /tmp/install-system-deps.sh \
 && rm -rf /var/lib/apt/lists/* /tmp/install-system-deps.sh
RUN useradd --create-home --uid 1000 app
WORKDIR /home/app/fmnist-pipeline
RUN chown app:app /home/app/fmnist-pipeline
USER app
# Only what `make setup` reads, and an empty package skeleton (and README, which pyproject.toml names) so that
# `pip install -e .` can register the packages now; their code arrives with the source COPY below (the editable
# install points at this directory), so editing code or docs does not invalidate this layer.
COPY --chown=app:app Makefile pyproject.toml requirements.lock requirements-gpu.lock ./
COPY --chown=app:app scripts/install-system-deps.sh scripts/
RUN mkdir -p pipeline flows && touch pipeline/__init__.py flows/__init__.py README.md

# GPU=0: tensorflow-cpu from requirements.lock, whatever the build or run machine has. GPU=1: TensorFlow's CUDA
# build and its nvidia-* wheels from requirements-gpu.lock; run that image with `docker run --gpus all` (NVIDIA
# Container Toolkit on the host). A build has no GPU to detect, so the argument says which; ENV keeps it for
# `make run` in the container. Declared here, after the shared layers, so both builds reuse those.
ARG GPU=0
ENV GPU=${GPU}
RUN make setup
# The source (.dockerignore keeps out .git, the venv, data and results). Without .git, DVC runs with
# core.no_scm (.dvc/config.local); dvc.lock and the run cache work the same.
COPY --chown=app:app . .
RUN .venv/bin/dvc config --local core.no_scm true \
 && mkdir -p data models metrics reports .dvc/cache
VOLUME ["/home/app/fmnist-pipeline/data", "/home/app/fmnist-pipeline/models", "/home/app/fmnist-pipeline/metrics", \
        "/home/app/fmnist-pipeline/reports", "/home/app/fmnist-pipeline/.dvc/cache"]
CMD ["make", "run"]
