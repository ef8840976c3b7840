// simgpu.h: the functions the simulated GPU backend (libggml-simgpu.so)
// offers beyond ggml's backend interface. They are not exported as
// symbols: ask the backend's registry for them by name with
// ggml_backend_reg_get_proc_address, ggml's mechanism for
// backend-specific functions. Shared by simgpu.cpp and package kernels.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// What one simulated device's buffers hold.
typedef struct {
    size_t total;     // configured size (LLMRT_SIM_GPUS)
    size_t allocated; // bytes in live buffers now
    size_t peak;      // most bytes live at once since load or the last reset
    int    n_buffers; // live buffers
    int    n_failed;  // allocations refused because they did not fit
    int64_t n_graphs; // graphs computed on the device since load
} llmrt_sim_stats_t;

// "llmrt_sim_stats": fills *out for device index dev (0-based, as in
// SIM<dev>); reset_peak then sets the peak to the bytes allocated now.
// Returns 0, or -1 for an unknown device.
typedef int (*llmrt_sim_stats_fn)(int dev, llmrt_sim_stats_t * out, int reset_peak);

// "llmrt_sim_probe": where the library's own ggml calls land. Reports the
// address of ggml_backend_reg_count as the library's dynamic linking
// resolved it, and the number of registered backends as the library sees
// it (a private copy of ggml-base would have its own, different registry).
typedef void (*llmrt_sim_probe_fn)(uintptr_t * reg_count_addr, size_t * reg_count);

#ifdef __cplusplus
}
#endif
