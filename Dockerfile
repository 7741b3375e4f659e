# fashionbot: CPU image by default. For CUDA: --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126
# The same install recipe as the Makefile: scripts/install.sh (a virtualenv, then pip).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Optional extras, e.g. --build-arg EXTRAS=[ray] for Ray cluster nodes (build --ray).
ARG EXTRAS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scripts/install.sh ./scripts/
COPY bot ./bot
COPY engine ./engine
COPY index_builder.py ./
RUN TORCH_INDEX="${TORCH_INDEX}" PYTHON=python sh scripts/install.sh /opt/venv ".${EXTRAS}"

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
    XDG_CACHE_HOME=/cache \
    FASHIONBOT_INDEX__DIR=/index \
    FASHIONBOT_SEARCH__QUERY_STORE=/index/state/queries.sqlite \
    FASHIONBOT_STATE__URL=sqlite:////index/state/state.sqlite \
    FASHIONBOT_HTTP__HOST=0.0.0.0
RUN mkdir -p /cache /index && chown fashionbot /cache /index
VOLUME ["/cache", "/index"]
USER fashionbot
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"
# The index must exist first: see docker-compose.yml (service "index").
CMD ["python", "-m", "bot"]
