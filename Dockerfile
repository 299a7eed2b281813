# One image for every VitalWatch role; the compose file picks the role by command.
FROM python:3.11-slim-bookworm
# chromium: PNG/PDF chart export (kaleido drives the system browser; nothing downloaded at run time)
RUN apt-get update && apt-get install -y --no-install-recommends chromium \
    && rm -rf /var/lib/apt/lists/*
ENV BROWSER_PATH=/usr/bin/chromium PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY monitor ./monitor
COPY devices ./devices
COPY dashboard ./dashboard
RUN pip install --no-cache-dir .
COPY config ./config
RUN useradd --system --uid 10001 --home /var/lib/vitalwatch vitalwatch \
    && mkdir -p /var/lib/vitalwatch && chown vitalwatch /var/lib/vitalwatch
USER vitalwatch
ENV VITALWATCH_CONFIG=/app/config/compose.toml
ENTRYPOINT ["vitalwatch"]
CMD ["check-config"]
