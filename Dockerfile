# MailboxKit: one process serving SMTP, IMAP and HTTP. Data lives in the /data volume.
FROM python:3.12-slim AS build
WORKDIR /src
RUN python -m venv /opt/mailboxkit
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/mailboxkit/bin/pip install --no-cache-dir .

FROM python:3.12-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends libcap2-bin \
    && setcap cap_net_bind_service=+ep "$(readlink -f /usr/local/bin/python3)" \
    && apt-get purge -y libcap2-bin && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /data --shell /usr/sbin/nologin mailboxkit \
    && mkdir /data && chown mailboxkit:mailboxkit /data
COPY --from=build /opt/mailboxkit /opt/mailboxkit
ENV PATH=/opt/mailboxkit/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MAILBOXKIT_DATA_DIR=/data \
    MAILBOXKIT_BIND=0.0.0.0 \
    MAILBOXKIT_SMTP_PORT=25 \
    MAILBOXKIT_SUBMISSION_PORT=587 \
    MAILBOXKIT_SUBMISSIONS_PORT=465 \
    MAILBOXKIT_IMAP_PORT=143 \
    MAILBOXKIT_IMAPS_PORT=993 \
    MAILBOXKIT_HTTP_PORT=8025
USER mailboxkit
VOLUME ["/data"]
EXPOSE 25 587 465 143 993 8025
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8025/healthz', timeout=4)"]
ENTRYPOINT ["mailboxkit"]
CMD ["serve"]
