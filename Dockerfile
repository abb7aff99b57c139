# Kairos in a container: `docker build -t kairos .` then
# `docker run -p 8080:8080 -e KAIROS_UPSTREAM_URL=http://origin:8000 \
#            -e KAIROS_STORE_URL=redis://redis:6379/0 kairos`
# Without KAIROS_STORE_URL the embedded Valkey keeps its data in the /data volume.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    KAIROS_SERVER_HOST=0.0.0.0 KAIROS_SERVER_PORT=8080 \
    KAIROS_STORE_DATA_DIR=/data/valkey KAIROS_RULES_FOLDER=/app/rules
WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY experiments ./experiments
RUN pip install --no-cache-dir . && useradd --system --home /app kairos \
    && mkdir -p /data && chown kairos /data
COPY rules ./rules
COPY config.toml ./config.toml
USER kairos
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/_kairos/health', timeout=2)" || exit 1
CMD ["kairos", "serve"]
