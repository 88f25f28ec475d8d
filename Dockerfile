# PRM Studio image: the dashboard and the workers run the same code.
# GPU workers: build with TORCH_INDEX=https://download.pytorch.org/whl/cu124 (or your CUDA).
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# bubblewrap: the sandbox that runs generated code
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/prm-studio
COPY pyproject.toml README.md ./
COPY app ./app
COPY workers ./workers
COPY models ./models
COPY migrations ./migrations
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}" \
    && pip install --no-cache-dir .

ENV PRM_STUDIO_DATA_DIR=/data PRM_STUDIO_ARTIFACTS_DIR=/artifacts
EXPOSE 7860
CMD ["prm-studio", "up", "--host", "0.0.0.0"]
