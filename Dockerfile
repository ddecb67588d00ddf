# CPU image (default target): installs exactly what `make setup` installs, runs `make run` (dvc repro).
#   docker build -t fmnist-pipeline .            && docker run --rm fmnist-pipeline
# GPU image (NVIDIA, CUDA wheels via pip):
#   docker build --target gpu -t fmnist-pipeline:gpu . && docker run --rm --gpus all fmnist-pipeline:gpu
FROM python:3.11-slim-bookworm AS cpu
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false TF_CPP_MIN_LOG_LEVEL=2
# System packages: the same list as scripts/install-system-deps.sh, plus git/make that a fresh clone needs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends dataset-fashion-mnist git make \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 1000 app
WORKDIR /home/app/fmnist-pipeline
# .git is part of the context on purpose: DVC needs the repository.
COPY --chown=app:app . .
USER app
RUN make setup
CMD ["make", "run"]

FROM cpu AS gpu
# Same pins, but TensorFlow's CUDA build instead of tensorflow-cpu; GPU is picked up automatically.
RUN .venv/bin/python -m pip uninstall -y tensorflow-cpu \
 && .venv/bin/python -m pip install "tensorflow[and-cuda]==2.21.0"
