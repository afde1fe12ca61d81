# syntax=docker/dockerfile:1
# One image for every pipeline step: `python -m components.<step>` (the Kubeflow components run the same code).
#   GPU (default):  docker build -t mlnt-pipeline:gpu .
#                   PyTorch's Linux wheels bundle CUDA 13 and cuDNN; the driver comes from the node
#                   (NVIDIA container toolkit / GPU operator).
#   CPU (slim):     docker build --build-arg VARIANT=cpu -t mlnt-pipeline:cpu .
#                   torch and torchvision from PyTorch's CPU wheel index: no CUDA libraries in the image.
# Everything else is installed from constraints.txt, the pinned environment that `make test` ran, hash-checked:
# requirements/image-{gpu,cpu}.txt (`make image-lock`) hold the sha256 of every file PyPI serves for each pin, and
# pip installs with --require-hashes, so a file that differs from the locked one fails the build. The one exception
# is the CPU variant's torch and torchvision, from PyTorch's CPU index, which the lock cannot reach (docs/deploy.md).
# A release pins the base image by digest as well:
#   --build-arg PYTHON_IMAGE=python:3.11.7-slim-bookworm@sha256:<docker buildx imagetools inspect python:3.11.7-slim-bookworm>
# and records the commit it was built from (the image has neither git nor .git; export's model card reads it):
#   --build-arg GIT_COMMIT=$(git rev-parse HEAD)
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG VARIANT=gpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/mlnt \
    MPLCONFIGDIR=/tmp/matplotlib

RUN groupadd --gid 10001 mlnt \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/mlnt --shell /usr/sbin/nologin mlnt

WORKDIR /app
# 1. the build backend, then the locked dependencies, every file checked against its hash (--no-deps: the lock is the
#    whole set; --no-build-isolation: the few sdists build with the locked setuptools, not one fetched unchecked). This
#    layer depends on the locks alone, so an edit to the code reuses it instead of downloading torch again.
COPY requirements/ requirements/
RUN pip install --no-cache-dir --no-deps --require-hashes -r requirements/image-build.txt \
    && if [ "$VARIANT" = "cpu" ]; then \
      pip install --no-cache-dir --no-deps --index-url "$TORCH_CPU_INDEX" torch==2.14.1 torchvision==0.29.1 \
      && pip install --no-cache-dir --no-deps --require-hashes --no-build-isolation -r requirements/image-cpu.txt; \
    elif [ "$VARIANT" = "gpu" ]; then \
      pip install --no-cache-dir --no-deps --require-hashes --no-build-isolation -r requirements/image-gpu.txt; \
    else \
      echo "VARIANT: expected gpu or cpu, found '$VARIANT'" >&2; exit 1; \
    fi
# 2. the project itself from this source, offline (--no-index: a dependency the lock lacks fails here, nothing is
#    fetched unchecked); 3. pip check: the installed set is consistent.
COPY pyproject.toml constraints.txt README.md ./
COPY model/ model/
COPY components/ components/
COPY benchmarks/ benchmarks/
COPY pipelines/ pipelines/
COPY serving/ serving/
COPY monitoring/ monitoring/
RUN pip install --no-cache-dir --no-index --no-build-isolation -c constraints.txt . \
    && pip check \
    && python -c "import torch, components.gate; print('torch', torch.__version__)"
COPY params.yaml dvc.yaml ./
# Each dataset's params (--params recipes/<name>.yaml; pipelines.trainjob --params /app/recipes/<name>.yaml).
COPY recipes/ recipes/
# The deploy step creates a missing InferenceService from the same manifest kubectl applies (one definition).
COPY k8s/base/serving/inferenceservice.yaml k8s/base/serving/

# Steps write under /app/artifacts and /app/releases: mount volumes there (the root file system can stay read-only).
RUN mkdir -p /app/artifacts /app/releases && chown 10001:10001 /app/artifacts /app/releases
# Last, so that a new commit rebuilds no earlier layer: export's model card records it (components/export.py).
ARG GIT_COMMIT=unknown
ENV MLNT_GIT_COMMIT=${GIT_COMMIT}
LABEL org.opencontainers.image.revision=${GIT_COMMIT}
USER 10001:10001
CMD ["python", "-m", "components.baseline", "--help"]
