# Quill web app (Gradio) calling a Quill REST API by URL: UI and model scale apart.
#
#   docker build -f docker/Dockerfile.app -t quill-app .
#   docker run -p 7860:7860 -e QUILL_APP_BACKEND=http://quill-api:8000 quill-app
#
# Production dependencies plus the [app] extra (Gradio), no training extras. The image holds
# no model: with QUILL_APP_BACKEND=local, mount one at /srv/quill/models/default instead.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False
WORKDIR /srv/quill

ARG TORCH_INDEX_URL=""
# torch is pinned; hadolint cannot see the pin through the optional index argument.
# hadolint ignore=DL3013
RUN pip install "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}

# The production dependencies and the [app] extra at the exact versions of requirements.lock,
# the tested set (torch is pinned in its own layer above).
COPY pyproject.toml README.md requirements.lock ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['app']))" > /tmp/requirements.txt \
    && grep -v '^torch==' requirements.lock > /tmp/constraints.txt \
    && pip install -r /tmp/requirements.txt -c /tmp/constraints.txt

COPY setup.py ./
COPY src ./src
# Quill itself, from the copied source (its dependencies are already installed above).
# A C compiler for the build of Quill's compiled beam search only (setup.py), removed
# in the same layer; without it Quill installs and searches in Python, slower.
# hadolint ignore=DL3008,DL3013
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-deps ".[app]" \
    && apt-get purge -y --auto-remove gcc libc6-dev && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 quill

USER 10001
ENV QUILL_APP_BACKEND=http://quill-api:8000 \
    QUILL_MODEL_DIR=/srv/quill/models/default
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=4)"]
CMD ["quill", "app", "--host", "0.0.0.0", "--port", "7860"]
