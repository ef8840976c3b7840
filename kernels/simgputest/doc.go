// Package simgputest runs llama.cpp on the simulated GPU (the ggml backend
// library that `make simgpu` builds from kernels/simgpu) and checks that the
// GPU code path gives the CPU's results. It is a package of its own because
// a loaded backend stays registered for the life of the process: every
// other test binary stays CPU-only. Its TestMain configures two devices
// (LLMRT_SIM_GPUS=2GiB,1GiB) before loading the library. With
// LLMRT_TEST_DEVICE=cuda (scripts/gpu-check.sh) the same comparisons run on
// the CUDA devices of lib/libggml-cuda.so instead, and the tests of the
// simulated device itself skip.
package simgputest
