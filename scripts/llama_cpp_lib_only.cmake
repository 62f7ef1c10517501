# Included at llama.cpp's project() call through CMAKE_PROJECT_INCLUDE (scripts/setup.sh).
# llama-cpp-python forces LLAMA_BUILD_COMMON on, yet its bindings load libllama and the ggml
# libraries alone: llama.cpp's common library (argument parsing, chat-template parsers, model
# downloads) only serves its command-line tools, and compiling it is a large part of the build.
# llama.cpp's own option() declares LLAMA_BUILD_COMMON after project(), so this value stands.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama: build common utils library" FORCE)
