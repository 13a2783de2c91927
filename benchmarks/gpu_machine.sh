#!/usr/bin/env bash
# The GPU checks in one call on a lent CUDA machine whose python3 holds PyTorch but not this project's
# other packages: the CUDA tests, then benchmarks/gpu.py at the quick and paper shapes.
#
# Here, once:  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#                --implementation cp -d .whl monai==1.6.1 nibabel==5.4.2
# There:       OUT=/some/folder bash benchmarks/gpu_machine.sh   (with .whl carried beside the repository)
# Results:     $OUT/cuda_tests.txt, $OUT/gpu.json, $OUT/gpu.txt, $OUT/nvidia_smi.txt
set -uo pipefail
OUT=${OUT:?set OUT to the folder for the results}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia_smi.txt"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__)" | tee -a "$OUT/nvidia_smi.txt"
timeout "${TESTS_TIMEOUT:-150}" python3 -m pytest -p no:cacheprovider -q \
  tests/rice_models/test_training_cuda.py tests/rice_models/test_data.py 2>&1 | tee "$OUT/cuda_tests.txt"
timeout "${BENCH_TIMEOUT:-330}" python3 benchmarks/gpu.py --device cuda --out "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu.txt"
