# The loadshape image: every `loadshape` subcommand (worker, alerts forward, topics, simulate).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    LOADSHAPE_STATE_DIR=/var/lib/loadshape
WORKDIR /opt/loadshape

COPY pyproject.toml constraints.txt README.md ./
COPY schemas ./schemas
COPY app ./app
RUN pip install -c constraints.txt . \
 && useradd --system --home-dir /var/lib/loadshape --create-home loadshape
COPY examples ./examples

USER loadshape
CMD ["loadshape", "--help"]
