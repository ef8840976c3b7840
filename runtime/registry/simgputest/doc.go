// Package simgputest drives the memory scheduler for real: a
// registry.Registry with a sched.Scheduler built from ggml's devices loads
// generated models onto GPUs, and the tests compare what the scheduler
// granted and estimated with what llama.cpp allocated and what the device
// itself counts. By default the devices are the simulated GPUs of
// lib/libggml-simgpu.so (`make simgpu`; LLMRT_SIM_GPUS=24MiB,16MiB); with
// LLMRT_TEST_DEVICE=cuda they are the CUDA devices of lib/libggml-cuda.so
// (`make cuda`, scripts/gpu-check.sh), their budgets capped to the same
// total so that the same models meet the same pressure. It is a package of
// its own because a loaded backend stays registered for the whole process.
package simgputest
