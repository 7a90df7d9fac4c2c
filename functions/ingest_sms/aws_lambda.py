"""The AWS Lambda handler (serverless.yml): ingest_sms behind its function URL."""

from functions.ingest_sms.main import ingest_sms
from shared.lambda_adapter import http_handler

handler = http_handler(ingest_sms)
