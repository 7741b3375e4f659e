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
    FASHIONBOT_INDEX__DIR=/index
RUN mkdir -p /cache /index && chown fashionbot /cache /index
VOLUME ["/cache", "/index"]
USER fashionbot
EXPOSE 8080
# The index must exist: docker run ... python index_builder.py build /catalog/catalog.csv
CMD ["python", "-m", "bot"]
