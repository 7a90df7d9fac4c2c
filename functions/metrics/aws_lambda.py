"""The AWS Lambda handlers (serverless.yml): metrics and the monthly statement, each
behind its function URL."""

from functions.metrics.main import metrics
from functions.metrics.main import statement as statement_endpoint
from shared.lambda_adapter import http_handler

handler = http_handler(metrics)
statement = http_handler(statement_endpoint)
