#!/usr/bin/env bash
# Lints the OpenAPI document with three independent tools, pinned, and fails on any problem.
#
# The document is docs/openapi.json: the committed export of ecommerce_api::openapi(), which a
# test in crates/api keeps equal to what the server serves (regenerate it with
# `UPDATE_OPENAPI=1 cargo test -p ecommerce-api openapi`). So this needs no build and no server.
#
#   1. openapi-spec-validator (PyPI): is it a valid OpenAPI 3.1 document?
#   2. @redocly/cli lint, ruleset recommended-strict (every warning is an error).
#   3. @stoplight/spectral-cli lint, ruleset spectral:oas, failing on warnings; it also checks
#      every example against its schema.
#
# Tools (installed on first use, reinstalled when their pins change):
#   - PyPI: scripts/openapi-lint/requirements.txt (exact versions), in a venv under
#     target/openapi-lint-venv.
#   - npm: scripts/openapi-lint/package.json + package-lock.json, installed with `npm ci` into
#     scripts/openapi-lint/node_modules (git-ignored).
# The few accepted findings are configured, each with its reason, in scripts/openapi-lint/
# (spectral.yaml, redocly.yaml, .redocly.lint-ignore.yaml).
#
# Usage: scripts/lint-openapi.sh            (needs python3, node >= 20 and npm)
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=scripts/openapi-lint
VENV=target/openapi-lint-venv
DOC=docs/openapi.json

log() { printf '[lint-openapi] %s\n' "$*" >&2; }

[[ -f $DOC ]] || { log "$DOC is missing; run: UPDATE_OPENAPI=1 cargo test -p ecommerce-api openapi"; exit 1; }

# --- PyPI tools -------------------------------------------------------------------------------
if ! cmp -s "$TOOLS/requirements.txt" "$VENV/installed-requirements.txt"; then
  log "installing $TOOLS/requirements.txt into $VENV"
  rm -rf "$VENV"
  mkdir -p target
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$TOOLS/requirements.txt"
  cp "$TOOLS/requirements.txt" "$VENV/installed-requirements.txt"
fi

# --- npm tools --------------------------------------------------------------------------------
if ! cmp -s "$TOOLS/package-lock.json" "$TOOLS/node_modules/.installed-package-lock.json"; then
  log "npm ci in $TOOLS"
  (cd "$TOOLS" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
  cp "$TOOLS/package-lock.json" "$TOOLS/node_modules/.installed-package-lock.json"
fi

# --- lint -------------------------------------------------------------------------------------
status=0

log "openapi-spec-validator"
"$VENV/bin/openapi-spec-validator" "$DOC" || status=1

# Redocly and Spectral run from the tools folder so that they find its configuration; the
# document path is relative to it, as in .redocly.lint-ignore.yaml.
log "redocly lint (recommended-strict)"
(cd "$TOOLS" && REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true \
  node_modules/.bin/redocly lint --config redocly.yaml --format=stylish "../../$DOC") || status=1

log "spectral lint (spectral:oas, failing on warnings)"
(cd "$TOOLS" && node_modules/.bin/spectral lint --ruleset spectral.yaml --fail-severity=warn \
  "../../$DOC") || status=1

if [[ $status -ne 0 ]]; then
  log "FAILED: $DOC has problems (see above)"
  exit 1
fi
log "OK: $DOC passes all three"
