#!/usr/bin/env bash
# Run the LlaMaKey benchmark from a fresh clone: bash bench/run.sh [--quick] [run_bench.py flags]
#
# Installs what it needs (and nothing outside bench/ except the project's own .venv when it is
# missing), then runs every scenario interleaved and writes bench/results/<timestamp>.{json,md}.
# Only loopback addresses are used; every load is bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LITELLM_VERSION=1.106.2   # pinned: the version the issue compares against

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
  echo "bench: needs Python >= 3.12 (set PYTHON=...)" >&2
  exit 1
fi

# The project's venv: mitmdump, lmk and trustme come from here, so stock mitmdump and the
# gateway run the very same mitmproxy.
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c 'import trustme, mitmproxy, llamakey' 2>/dev/null; then
  .venv/bin/pip install -q -e . trustme
fi

# LiteLLM gets a venv of its own: its pins conflict with the project's.
if [[ " $* " != *" --scenarios "* || " $* " == *litellm* ]]; then
  if ! bench/.venv-litellm/bin/python -c "import importlib.metadata as m, sys; \
sys.exit(m.version('litellm') != '$LITELLM_VERSION')" 2>/dev/null; then
    echo "bench: installing litellm[proxy]==$LITELLM_VERSION into bench/.venv-litellm" >&2
    "$PY" -m venv bench/.venv-litellm
    bench/.venv-litellm/bin/pip install -q "litellm[proxy]==$LITELLM_VERSION"
  fi
fi

# py-spy for --profile.
if [[ " $* " == *" --profile "* ]] && [ ! -x bench/.venv-tools/bin/py-spy ]; then
  "$PY" -m venv bench/.venv-tools
  bench/.venv-tools/bin/pip install -q py-spy
fi

# 1,000 streams through a proxy are ~2,000 sockets in it; raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

exec "$ROOT/.venv/bin/python" bench/run_bench.py "$@"
