#!/usr/bin/env bash
# Runs validate_deploy.py with the deploy validators' virtualenv (installed by tools/setup.sh).
# usage: run_validator.sh VENV SUBCOMMAND [ARGS...]
set -euo pipefail
venv=$1
shift
if [[ ! -x $venv/bin/python3 ]]; then
  echo "deploy validation needs its virtualenv at $venv: run tools/setup.sh" \
       "(it calls deploy/tools/install-validators.sh)" >&2
  exit 1
fi
exec "$venv/bin/python3" "$(dirname "$0")/validate_deploy.py" "$@"
