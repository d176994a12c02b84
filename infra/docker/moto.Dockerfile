# syntax=docker/dockerfile:1.7
#
# moto server for docker compose's "moto" profile: SQS (and S3, DynamoDB) with no auth token, the same moto
# version the test suite runs against. Also runs infra/compose/create_queues.py (boto3 comes with moto).
# Built locally by compose (docker-compose.yml), never pushed.
FROM python:3.11-slim-bookworm

ARG MOTO_VERSION=5.2.5
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore PYTHONUNBUFFERED=1
RUN python -m pip install "moto[server]==${MOTO_VERSION}" \
 && groupadd --system --gid 10001 moto \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin moto

USER 10001:10001
EXPOSE 4566
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=12 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:4566/moto-api/', timeout=2)"]
ENTRYPOINT ["moto_server"]
CMD ["--host", "0.0.0.0", "--port", "4566"]
