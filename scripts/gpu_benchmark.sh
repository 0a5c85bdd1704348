#!/usr/bin/env bash
# GPU throughput benchmark: one command, under 5 minutes on one H200, writes
# results/tables/throughput_gpu.csv (the columns of throughput.csv plus the device name).
#
#   bash scripts/gpu_benchmark.sh            # on a machine with a CUDA GPU and PyTorch
#
# It uses the project's environment when there is one (./uv), else the machine's python3
# (a GPU image usually has PyTorch, pandas and tqdm but not snnTorch: put its wheel in
# .whl/, e.g. `./uv run python -m pip download --no-deps -d .whl snntorch`, and this
# script installs it into a temporary folder first).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/tables/throughput_gpu.csv}

if [ -x .venv/bin/python ]; then
  python=.venv/bin/python
else
  python=python3
  if ! $python -c "import snntorch" 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
      $python -m pip install -q --no-index --no-deps --target /tmp/snn-es-site .whl/*.whl
      export PYTHONPATH="/tmp/snn-es-site${PYTHONPATH:+:$PYTHONPATH}"
    else
      echo "scripts/gpu_benchmark.sh: snntorch is missing; put its wheel in .whl/ (see the header)" >&2
      exit 1
    fi
  fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
$python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to PyTorch')"

# The images: ES generation 0's minibatch of the big subsets where they were built (`make
# subsets`, or carried along with the checkout), else uniform noise (column `images`).
images=()
if [ -f results/subsets/cifar10/big.pt ] && [ -f results/subsets/mnist/big.pt ]; then
  images=(--subset 'results/subsets/{dataset}/big.pt')
fi

# The SNNs of the default config (CIFAR-10 16/32 channels, MNIST 8/16), T = 8; the target
# size P >= 1024 x B = 128, and the population curve up to P = 8192.
exec $python -m snn_es.benchmark --device cuda --out "$out" "${images[@]}" \
  --networks '{"cifar10": {"input_shape": [3, 32, 32], "channels": [16, 32]},
               "mnist": {"input_shape": [1, 28, 28], "channels": [8, 16]}}' \
  --encoders poisson repeat --population 1024 --batch 128 --steps 8 --chunks 128 256 \
  --repeats 1 --rounds 3 --low-rank 1 --scaling-populations 256 1024 4096 8192 --scaling-batch 128 \
  --scaling-chunk 256 --scaling-encoders repeat --image-chunks 128
