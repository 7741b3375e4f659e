# fashionbot: CPU image by default. For CUDA: --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126
# Same install steps as the Makefile: a virtualenv with `pip install .`.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY engine ./engine
COPY index_builder.py ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --extra-index-url "${TORCH_INDEX}" .

FROM python:${PYTHON_VERSION}-slim
RUN useradd --create-home --uid 10001 fashionbot
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=fashionbot config.toml index_builder.py ./
COPY --chown=fashionbot bot ./bot
COPY --chown=fashionbot engine ./engine
COPY --chown=fashionbot data/demo ./data/demo
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/cache/huggingface \
    FASHIONBOT_INDEX__DIR=/index \
    FASHIONBOT_SEARCH__QUERY_STORE=/index/state/queries.sqlite
RUN mkdir -p /cache /index && chown fashionbot /cache /index
VOLUME ["/cache", "/index"]
USER fashionbot
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"
# The index must exist first: see docker-compose.yml (service "index").
CMD ["python", "-m", "bot"]
