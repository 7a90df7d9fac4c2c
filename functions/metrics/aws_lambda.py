"""The AWS Lambda handler (serverless.yml): metrics behind its function URL."""

from functions.metrics.main import metrics
from shared.lambda_adapter import http_handler

handler = http_handler(metrics)
