#!/usr/bin/env bash
# Build or refresh the project's virtual environment in .venv/ (idempotent).
#
# A stamp file records a hash of everything that decides what is installed; when it matches,
# this script does nothing but print a line, so calling it before every command is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.lightfer-installed
FACENET="facenet-pytorch==2.6.0"
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)

if [[ -f $STAMP && "$(cat "$STAMP")" == "$want" ]]; then
    echo "bootstrap: .venv is up to date"
    exit 0
fi

# On success pip stays silent; on failure its output is shown without the chatter about
# this machine's local package mirrors, which says nothing about the project.
pip_install() {
    local log status=0
    log=$(mktemp)
    "$VENV/bin/python" -m pip install --quiet "$@" >"$log" 2>&1 || status=$?
    if [[ $status -ne 0 ]]; then
        grep -v "is ignored: it is neither a file nor a directory" "$log" >&2 || true
        echo "bootstrap: pip install $* failed (exit $status)" >&2
    fi
    rm -f "$log"
    return "$status"
}

start=$(date +%s)
[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
pip_install --upgrade pip
pip_install -e ".[dev]"
# See pyproject.toml: facenet-pytorch's own pins are wrong for current torch/numpy/Pillow.
pip_install --no-deps "$FACENET"
echo "$want" > "$STAMP"
echo "bootstrap: .venv ready in $(( $(date +%s) - start )) s"
