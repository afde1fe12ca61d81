# syntax=docker/dockerfile:1
# One image for every pipeline step: `python -m components.<step>` (the Kubeflow components run the same code).
#   GPU (default):  docker build -t mlnt-pipeline:gpu .
#                   PyTorch's Linux wheels bundle CUDA 13 and cuDNN; the driver comes from the node
#                   (NVIDIA container toolkit / GPU operator).
#   CPU (slim):     docker build --build-arg VARIANT=cpu -t mlnt-pipeline:cpu .
#                   torch and torchvision from PyTorch's CPU wheel index: no CUDA libraries in the image.
# Everything else is installed from constraints.txt, the pinned environment that `make test` ran.
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
COPY pyproject.toml constraints.txt README.md ./
COPY model/ model/
COPY components/ components/
COPY benchmarks/ benchmarks/
COPY pipelines/ pipelines/
COPY serving/ serving/
COPY monitoring/ monitoring/
RUN if [ "$VARIANT" = "cpu" ]; then \
      pip install --no-cache-dir --index-url "$TORCH_CPU_INDEX" torch==2.14.1 torchvision==0.29.1; \
    elif [ "$VARIANT" != "gpu" ]; then \
      echo "VARIANT: expected gpu or cpu, found '$VARIANT'" >&2; exit 1; \
    fi \
    && pip install --no-cache-dir -c constraints.txt . \
    && python -c "import torch, components.gate; print('torch', torch.__version__)"
COPY params.yaml dvc.yaml ./
# The deploy step creates a missing InferenceService from the same manifest kubectl applies (one definition).
COPY k8s/base/serving/inferenceservice.yaml k8s/base/serving/

# Steps write under /app/artifacts and /app/releases: mount volumes there (the root file system can stay read-only).
RUN mkdir -p /app/artifacts /app/releases && chown 10001:10001 /app/artifacts /app/releases
USER 10001:10001
CMD ["python", "-m", "components.baseline", "--help"]
