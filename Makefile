# Two commands do all the setup on a fresh machine:
#   make dev    run every function locally on an embedded Postgres and S3 (or DATABASE_URL)
#   make test   lint, type-check, package the AWS deployment and run the whole test suite
# Both bootstrap the toolchain they need: uv (pinned, from PyPI) and the locked environment.

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := .venv

.PHONY: dev test lint package format migrate schema clean system-packages

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

.venv/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

dev: .venv/.synced
	.venv/bin/python -m tools.dev

test: lint package system-packages
	.venv/bin/python -m pytest

# What the tests run beside Postgres: PgBouncer in transaction mode, as Supabase's
# transaction pooler (tools/pooler.py), and Chromium, in which Playwright opens the KPI
# page (tests/functions/test_kpi_page.py). Installed here where possible (Debian, as
# root). As root, nftables too: tests/functions/test_silent_network.py drops packets
# with it (without root no program can, and that one test says so in the summary).
system-packages:
	@tools/require.sh pgbouncer pgbouncer
	@tools/require.sh chromium chromium
	@if [ "$$(id -u)" = 0 ]; then tools/require.sh nft nftables; fi

# The AWS deployment, packaged offline and linted (osls from package-lock.json, the
# layers' wheels for Lambda's arm64 from uv.lock): tests/deploy/test_deployment.py reads it.
package: .venv/.synced
	.venv/bin/python -m tools.package

lint: .venv/.synced
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

format: .venv/.synced
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

migrate: .venv/.synced
	.venv/bin/python -m tools.migrate

# supabase/schema.sql, the current schema, written again from the migrations.
schema: .venv/.synced
	.venv/bin/python -m tools.schema

clean:
	rm -rf .venv .tools .mypy_cache .pytest_cache .ruff_cache build .serverless node_modules
