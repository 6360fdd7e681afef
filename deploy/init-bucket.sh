#!/bin/sh
# Create the labelforge bucket in MinIO (idempotent). Runs in the minio/mc image from docker-compose.
# Env: S3_ENDPOINT (http://minio:9000), MINIO_ROOT_USER, MINIO_ROOT_PASSWORD, LABELFORGE_S3_BUCKET.
set -eu
: "${S3_ENDPOINT:=http://minio:9000}"
: "${LABELFORGE_S3_BUCKET:=labelforge}"
until mc alias set lf "$S3_ENDPOINT" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1; do
  echo "waiting for MinIO at $S3_ENDPOINT"; sleep 1
done
mc mb --ignore-existing "lf/$LABELFORGE_S3_BUCKET"
# Objects are private: clients get presigned URLs from the API, never anonymous access.
mc anonymous set none "lf/$LABELFORGE_S3_BUCKET"
echo "bucket $LABELFORGE_S3_BUCKET ready"
