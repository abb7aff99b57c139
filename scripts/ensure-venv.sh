#!/usr/bin/env bash
# Create the virtual environment. Debian ships `venv` without ensurepip unless the
# python3-venv package is installed, so install it when the first attempt fails.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  exit 0
fi
"$python" -c 'import sys; assert sys.version_info >= (3, 11), "Kairos needs Python 3.11 or newer"'
if ! "$python" -m venv "$venv" 2>/dev/null; then
  rm -rf "$venv"
  version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  echo "python venv is missing; installing Debian's python3-venv" >&2
  "$(dirname "$0")/system-packages.sh" "python${version}-venv" || \
    "$(dirname "$0")/system-packages.sh" python3-venv
  "$python" -m venv "$venv"
fi
