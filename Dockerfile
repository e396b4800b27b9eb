# MailboxKit: one process serving SMTP, IMAP and HTTP; its data lives in the /data volume.
#
# Inside the container every listener uses its unprivileged default port (SMTP 2525, submission
# 2587 and 2465, IMAP 1143 and 1993, HTTP 8025), so the process needs no capability at all and
# runs as a plain user; publish them on the standard ports (25:2525, 587:2587, 465:2465,
# 143:1143, 993:1993), as compose.yaml does. See docs/deploy.md.
#
#   docker build -t mailboxkit .
#   docker run -d -p 25:2525 -p 587:2587 -p 465:2465 -p 143:1143 -p 993:1993 \
#       -p 127.0.0.1:8025:8025 -v mailboxkit-data:/data mailboxkit

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3 -m venv /opt/mailboxkit
# Dependencies first, from pyproject.toml alone, so a change to src/ reuses this layer.
COPY pyproject.toml README.md ./
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > requirements.txt \
    && /opt/mailboxkit/bin/pip install "setuptools>=69" wheel \
    && /opt/mailboxkit/bin/pip install -r requirements.txt
COPY src ./src
RUN /opt/mailboxkit/bin/pip install --no-deps --no-build-isolation . \
    && /opt/mailboxkit/bin/python -m compileall -q /opt/mailboxkit/lib \
    && /opt/mailboxkit/bin/mailboxkit --help > /dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="MailboxKit" \
      org.opencontainers.image.description="A self-hostable email server for AI agents: SMTP, IMAP, an HTTP API and pushed events." \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed uid/gid, so a bind-mounted /data can be prepared on the host: chown 10025:10025.
RUN groupadd --system --gid 10025 mailboxkit \
    && useradd --system --uid 10025 --gid mailboxkit --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin mailboxkit \
    && mkdir /data && chown mailboxkit:mailboxkit /data && chmod 0750 /data
COPY --from=build /opt/mailboxkit /opt/mailboxkit
ENV PATH=/opt/mailboxkit/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MAILBOXKIT_DATA_DIR=/data \
    MAILBOXKIT_BIND=0.0.0.0 \
    MAILBOXKIT_SMTP_PORT=2525 \
    MAILBOXKIT_SUBMISSION_PORT=2587 \
    MAILBOXKIT_SUBMISSIONS_PORT=2465 \
    MAILBOXKIT_IMAP_PORT=1143 \
    MAILBOXKIT_IMAPS_PORT=1993 \
    MAILBOXKIT_HTTP_PORT=8025
USER mailboxkit
WORKDIR /data
VOLUME ["/data"]
EXPOSE 2525 2587 2465 1143 1993 8025
# /healthz on the HTTP port: the process is up and serving (/readyz also asks the database).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MAILBOXKIT_HTTP_PORT', '8025'), timeout=4)"]
# SIGTERM drains sessions in flight for up to MAILBOXKIT_SHUTDOWN_GRACE (30 s): stop with a longer
# timeout (docker stop -t 40; compose.yaml sets stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["mailboxkit"]
CMD ["serve"]
