#!/usr/bin/env bash
# The GPU path, exercised on a lent accelerator (the device tool): nothing in the project depends on it.
#
# What it does, writing everything to $OUT (or ./gpu_check_out):
#   1. a fresh venv with the project and ONNX Runtime's GPU build (the [gpu] extra's package), installed from wheels
#      in .whl/ (the device machine reaches no package index);
#   2. the provider tests that run here with a substituted provider list, now against the real CUDA / TensorRT
#      providers (tests/test_sessions.py, tests/test_openvino.py);
#   3. invsr-bench on every bundled backend with the CPU, CUDA and TensorRT (fp16) paths, as JSON;
#   4. each backend's GPU output against its CPU output (PSNR, in the bench table: "PSNR vs fp32");
#   5. TensorRT's engine cache: the same model started twice in fresh processes, the second start timed against
#      the first.
#
# Wheels: onnxruntime-gpu for the device's Python (3.12 there) is about 255 MB, and a device call carries 64 MiB
# with the working tree (52 MB since the finished models' start files left it; 136 MB before, when no call could
# start), so it travels in pieces of at most 12 MB: here, `split -b 12M onnxruntime_gpu-*.whl .whl/ort-gpu.part.`,
# each call carrying the next piece by its own path (`carry: [".whl/ort-gpu.part.ab"]`: a carried path replaces
# only itself, and the pieces before it stay on the warm machine; `cat` joins them below). That is about 21 calls,
# so chain them inside the 30 s a machine stays warm. The project's other needs (pluggy, tqdm; PySide6 is not
# needed headless) go in .whl/ as wheels too.
#
# Not yet run: no session has had an accelerator since this script was written; the README says so.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1

PY="${PYTHON:-python3}"
VENV=/tmp/invsr-gpu-venv
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv --system-site-packages "$VENV"  # the image's numpy, onnx, opencv and pytest are used as they are
fi
if ls .whl/ort-gpu.part.* >/dev/null 2>&1; then
  cat .whl/ort-gpu.part.* > /tmp/onnxruntime_gpu-joined.whl
  WHEEL_NAME=$(cat .whl/ort-gpu.name)  # the wheel's real file name: pip reads the tags from it
  cp /tmp/onnxruntime_gpu-joined.whl "/tmp/$WHEEL_NAME"
  "$VENV/bin/pip" install -q --no-index --no-deps "/tmp/$WHEEL_NAME"
fi
if ls .whl/*.whl >/dev/null 2>&1; then
  "$VENV/bin/pip" install -q --no-index --no-deps .whl/*.whl
fi
"$VENV/bin/pip" install -q --no-index --no-deps --no-build-isolation -e .
"$VENV/bin/python" - <<'EOF'
import onnxruntime as ort
print("onnxruntime", ort.__version__, "providers:", ort.get_available_providers())
EOF
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true

echo "== provider tests"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_sessions.py tests/test_openvino.py || true

echo "== invsr-bench: CPU, CUDA, TensorRT fp16"
"$VENV/bin/python" -m model_export.commands.bench --size 512 --threads 0 --repeat 3 --json "$OUT/bench_gpu.json" || true

echo "== TensorRT engine cache: first and second start of the same model, each in a fresh process"
export XDG_CACHE_HOME=/tmp/invsr-gpu-cache
rm -rf "$XDG_CACHE_HOME"
for start in first second; do
  "$VENV/bin/python" - "$start" <<'EOF'
import sys, time
import numpy as np
from invsr_desktop.engine.sessions import SessionPool
from invsr_desktop.resources import MODELS
t = time.perf_counter()
pool = SessionPool(provider="tensorrt")
session = pool.session(MODELS / "esrgan-faithful-x4.onnx")
session.run(["sr"], {"lr": np.zeros((1, 3, 128, 128), np.float32)})
print(f"{sys.argv[1]} start with a run: {time.perf_counter() - t:.1f} s on {pool.paths_in_use()}")
EOF
done
echo "done: $OUT"
