// simgpu.cpp: a simulated GPU for ggml, built as a backend library
// (lib/libggml-simgpu.so, `make simgpu`) and loaded with ggml_backend_load.
//
// It registers devices of type GPU whose buffer type is not a host type, so
// llama.cpp and ggml_backend_sched treat them as they treat CUDA devices:
// weights, KV cache and compute buffers are allocated on the device, graphs
// are split at backend boundaries and tensors are copied across. The
// buffers are host memory and compute runs ggml's CPU kernels on them, so
// results equal the CPU backend's. Sizes come from LLMRT_SIM_GPUS (e.g.
// "2GiB,1GiB"); unset or empty registers no devices. LLMRT_SIM_GPUS_REFUSE
// names ggml ops the devices refuse (e.g. "OUT_PROD"), to exercise the
// fallback to the CPU that a real device's missing kernels cause.
//
// The library is linked without libggml-base: its ggml_* references are
// left undefined and bind to the ggml the process already has (llmrt
// links ggml statically and exports its symbols), so there is one backend
// registry, one log callback and one CPU backend in the process.
#include "ggml-backend-impl.h"
#include "ggml-cpu.h"
#include "ggml-impl.h"
#include "simgpu.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

namespace {

// Tensor data alignment in device buffers (CUDA uses 128; CPU kernels need 32).
constexpr size_t kAlignment = 128;

// One simulated device. ggml's device and buffer-type structs are embedded
// so that their context pointers lead back here.
struct sim_device {
    std::string name, description, pci_bus_id, uuid;
    size_t total = 0;

    std::mutex mu; // guards the counters below
    size_t allocated = 0, peak = 0;
    int n_buffers = 0, n_failed = 0;
    int64_t n_graphs = 0;

    ggml_backend_device dev{};
    ggml_backend_buffer_type buft{};
};

// A device buffer: aligned host memory charged to its device.
struct sim_buffer {
    sim_device * dev;
    void * data;
    size_t size;
};

// A device stream: a CPU backend that runs the graphs on device memory.
struct sim_stream {
    sim_device * dev;
    ggml_backend_t cpu;
};

// Devices live as long as the process: ggml has no way to unregister them.
std::vector<std::unique_ptr<sim_device>> g_devices;

// g_refused[op] is set for the ops LLMRT_SIM_GPUS_REFUSE names.
bool g_refused[GGML_OP_COUNT] = {};
ggml_backend_reg g_reg{};

// The stream's identity for ggml_backend_*_guid checks: "llmrt-simgpu-v01".
ggml_guid g_guid = {0x6c, 0x6c, 0x6d, 0x72, 0x74, 0x2d, 0x73, 0x69, 0x6d, 0x67, 0x70, 0x75, 0x2d, 0x76, 0x30, 0x31};

// ---- buffers ---------------------------------------------------------------

void buffer_free(ggml_backend_buffer_t buffer) {
    auto * b = static_cast<sim_buffer *>(buffer->context);
    {
        std::lock_guard<std::mutex> lock(b->dev->mu);
        b->dev->allocated -= b->size;
        b->dev->n_buffers--;
    }
    std::free(b->data);
    delete b;
}

void * buffer_get_base(ggml_backend_buffer_t buffer) {
    return static_cast<sim_buffer *>(buffer->context)->data;
}

void buffer_memset_tensor(ggml_backend_buffer_t, ggml_tensor * t, uint8_t value, size_t offset, size_t size) {
    std::memset(static_cast<char *>(t->data) + offset, value, size);
}

void buffer_set_tensor(ggml_backend_buffer_t, ggml_tensor * t, const void * data, size_t offset, size_t size) {
    std::memcpy(static_cast<char *>(t->data) + offset, data, size);
}

void buffer_get_tensor(ggml_backend_buffer_t, const ggml_tensor * t, void * data, size_t offset, size_t size) {
    std::memcpy(data, static_cast<const char *>(t->data) + offset, size);
}

const char * buft_get_name(ggml_backend_buffer_type_t buft);

bool is_sim_buft(ggml_backend_buffer_type_t buft) {
    return buft != nullptr && buft->iface.get_name == buft_get_name;
}

// Device-to-device copies (same or another simulated device) are done here,
// as a GPU does peer copies; anything else returns false and ggml falls back
// to get_tensor/set_tensor through the host, as with a real device.
bool buffer_cpy_tensor(ggml_backend_buffer_t, const ggml_tensor * src, ggml_tensor * dst) {
    if (src->buffer == nullptr || !is_sim_buft(src->buffer->buft)) {
        return false;
    }
    std::memcpy(dst->data, src->data, ggml_nbytes(src));
    return true;
}

void buffer_clear(ggml_backend_buffer_t buffer, uint8_t value) {
    auto * b = static_cast<sim_buffer *>(buffer->context);
    std::memset(b->data, value, b->size);
}

const ggml_backend_buffer_i kBufferIface = {
    /* .free_buffer   = */ buffer_free,
    /* .get_base      = */ buffer_get_base,
    /* .init_tensor   = */ nullptr,
    /* .memset_tensor = */ buffer_memset_tensor,
    /* .set_tensor    = */ buffer_set_tensor,
    /* .get_tensor    = */ buffer_get_tensor,
    /* .cpy_tensor    = */ buffer_cpy_tensor,
    /* .clear         = */ buffer_clear,
    /* .reset         = */ nullptr,
};

// ---- buffer type -----------------------------------------------------------

const char * buft_get_name(ggml_backend_buffer_type_t buft) {
    return static_cast<sim_device *>(buft->context)->name.c_str();
}

// Allocates size bytes on the device, or returns NULL (as a GPU does when
// out of memory) when they would take it past its configured size.
ggml_backend_buffer_t buft_alloc_buffer(ggml_backend_buffer_type_t buft, size_t size) {
    auto * d = static_cast<sim_device *>(buft->context);
    const size_t padded = size > d->total ? SIZE_MAX : (size + kAlignment - 1) / kAlignment * kAlignment;
    {
        std::lock_guard<std::mutex> lock(d->mu);
        if (padded > d->total - d->allocated) {
            d->n_failed++;
            GGML_LOG_ERROR("%s: out of memory: %zu bytes requested, %zu of %zu free\n", d->name.c_str(), size,
                           d->total - d->allocated, d->total);
            return nullptr;
        }
        d->allocated += padded; // reserve now so concurrent allocations cannot overcommit
    }
    auto release = [d, padded] {
        std::lock_guard<std::mutex> lock(d->mu);
        d->allocated -= padded;
    };
    void * data = std::aligned_alloc(kAlignment, padded);
    if (data == nullptr) {
        release();
        GGML_LOG_ERROR("%s: host allocation of %zu bytes failed\n", d->name.c_str(), padded);
        return nullptr;
    }
    auto * b = new (std::nothrow) sim_buffer{d, data, padded};
    if (b == nullptr) {
        std::free(data);
        release();
        return nullptr;
    }
    ggml_backend_buffer_t buffer = ggml_backend_buffer_init(buft, kBufferIface, b, size);
    if (buffer == nullptr) {
        std::free(data);
        delete b;
        release();
        return nullptr;
    }
    std::lock_guard<std::mutex> lock(d->mu);
    d->n_buffers++;
    if (d->allocated > d->peak) {
        d->peak = d->allocated;
    }
    return buffer;
}

size_t buft_get_alignment(ggml_backend_buffer_type_t) { return kAlignment; }

// No buffer can be larger than the device.
size_t buft_get_max_size(ggml_backend_buffer_type_t buft) {
    return static_cast<sim_device *>(buft->context)->total;
}

// Not host memory as far as ggml knows: this is what makes the scheduler
// copy tensors between the CPU and the device.
bool buft_is_host(ggml_backend_buffer_type_t) { return false; }

const ggml_backend_buffer_type_i kBuftIface = {
    /* .get_name       = */ buft_get_name,
    /* .alloc_buffer   = */ buft_alloc_buffer,
    /* .get_alignment  = */ buft_get_alignment,
    /* .get_max_size   = */ buft_get_max_size,
    /* .get_alloc_size = */ nullptr,
    /* .is_host        = */ buft_is_host,
    /* .noalloc_buffer = */ nullptr,
};

// ---- stream (backend) ------------------------------------------------------

const char * stream_get_name(ggml_backend_t backend) {
    return static_cast<sim_stream *>(backend->context)->dev->name.c_str();
}

void stream_free(ggml_backend_t backend) {
    auto * s = static_cast<sim_stream *>(backend->context);
    ggml_backend_free(s->cpu);
    delete s;
    delete backend;
}

// The graph's tensors are in device buffers (host memory), so the CPU
// backend's kernels compute it in place.
ggml_status stream_graph_compute(ggml_backend_t backend, ggml_cgraph * cgraph, int) {
    auto * s = static_cast<sim_stream *>(backend->context);
    {
        std::lock_guard<std::mutex> lock(s->dev->mu);
        s->dev->n_graphs++;
    }
    return ggml_backend_graph_compute(s->cpu, cgraph);
}

const ggml_backend_i kStreamIface = {
    /* .get_name           = */ stream_get_name,
    /* .free               = */ stream_free,
    /* .set_tensor_async   = */ nullptr,
    /* .get_tensor_async   = */ nullptr,
    /* .cpy_tensor_async   = */ nullptr,
    /* .synchronize        = */ nullptr,
    /* .graph_plan_create  = */ nullptr,
    /* .graph_plan_free    = */ nullptr,
    /* .graph_plan_update  = */ nullptr,
    /* .graph_plan_compute = */ nullptr,
    /* .graph_compute      = */ stream_graph_compute,
    /* .event_record       = */ nullptr,
    /* .event_wait         = */ nullptr,
    /* .graph_optimize     = */ nullptr,
    /* .graph_reserve      = */ nullptr,
    /* .buffer_size        = */ nullptr,
    /* .reset              = */ nullptr,
};

bool is_sim_stream(ggml_backend_t backend) {
    return backend != nullptr && backend->iface.get_name == stream_get_name;
}

// llama.cpp hands every backend its thread count and abort callback
// through these two registry functions; both go to the inner CPU backend.
void stream_set_n_threads(ggml_backend_t backend, int n_threads) {
    if (is_sim_stream(backend)) {
        ggml_backend_cpu_set_n_threads(static_cast<sim_stream *>(backend->context)->cpu, n_threads);
    }
}

void stream_set_abort_callback(ggml_backend_t backend, ggml_abort_callback cb, void * data) {
    if (is_sim_stream(backend)) {
        ggml_backend_cpu_set_abort_callback(static_cast<sim_stream *>(backend->context)->cpu, cb, data);
    }
}

// ---- device ----------------------------------------------------------------

sim_device * dev_of(ggml_backend_dev_t dev) { return static_cast<sim_device *>(dev->context); }

const char * dev_get_name(ggml_backend_dev_t dev) { return dev_of(dev)->name.c_str(); }

const char * dev_get_description(ggml_backend_dev_t dev) { return dev_of(dev)->description.c_str(); }

void dev_get_memory(ggml_backend_dev_t dev, size_t * free, size_t * total) {
    sim_device * d = dev_of(dev);
    std::lock_guard<std::mutex> lock(d->mu);
    *free = d->total - d->allocated;
    *total = d->total;
}

enum ggml_backend_dev_type dev_get_type(ggml_backend_dev_t) { return GGML_BACKEND_DEVICE_TYPE_GPU; }

void dev_get_props(ggml_backend_dev_t dev, ggml_backend_dev_props * props) {
    sim_device * d = dev_of(dev);
    std::memset(props, 0, sizeof(*props));
    props->name = d->name.c_str();
    props->description = d->description.c_str();
    dev_get_memory(dev, &props->memory_free, &props->memory_total);
    props->id = d->uuid.c_str();
    props->type = GGML_BACKEND_DEVICE_TYPE_GPU;
    // llama.cpp drops GPUs whose device_id repeats, so every device has its own.
    props->device_id = d->pci_bus_id.c_str();
    props->caps = {/* async */ false, /* host_buffer */ false, /* buffer_from_host_ptr */ false, /* events */ false};
    props->library = "simgpu";
}

ggml_backend_t dev_init_backend(ggml_backend_dev_t dev, const char *) {
    ggml_backend_t cpu = ggml_backend_cpu_init();
    if (cpu == nullptr) {
        GGML_LOG_ERROR("%s: cannot create the CPU backend that computes for it\n", dev_of(dev)->name.c_str());
        return nullptr;
    }
    auto * s = new (std::nothrow) sim_stream{dev_of(dev), cpu};
    auto * backend = s ? new (std::nothrow) ggml_backend{&g_guid, kStreamIface, dev, s} : nullptr;
    if (backend == nullptr) {
        delete s;
        ggml_backend_free(cpu);
        return nullptr;
    }
    return backend;
}

ggml_backend_buffer_type_t dev_get_buffer_type(ggml_backend_dev_t dev) { return &dev_of(dev)->buft; }

// A tensor's memory is usable by this device's kernels when it has none yet
// (only a shape), lives in a simulated device's buffer, or in a plain host
// buffer (the scheduler copies such inputs over first). CPU "extra" buffers
// (repacked weights) are neither and have a layout only the CPU backend reads.
bool usable_memory(const ggml_tensor * t) {
    if (t->view_src != nullptr) {
        t = t->view_src;
    }
    if (t->buffer == nullptr) {
        return true;
    }
    ggml_backend_buffer_type_t buft = t->buffer->buft;
    return is_sim_buft(buft) || ggml_backend_buft_is_host(buft);
}

// Honest: what the CPU backend computes, on memory this device can hold.
bool dev_supports_op(ggml_backend_dev_t, const ggml_tensor * op) {
    if (g_refused[op->op] || !usable_memory(op)) {
        return false;
    }
    for (int i = 0; i < GGML_MAX_SRC; i++) {
        if (op->src[i] != nullptr && !usable_memory(op->src[i])) {
            return false;
        }
    }
    ggml_backend_dev_t cpu = ggml_backend_reg_dev_get(ggml_backend_cpu_reg(), 0);
    return cpu != nullptr && ggml_backend_dev_supports_op(cpu, op);
}

// Like a discrete GPU, a device computes only on its own buffers.
bool dev_supports_buft(ggml_backend_dev_t dev, ggml_backend_buffer_type_t buft) {
    return buft == &dev_of(dev)->buft;
}

const ggml_backend_device_i kDeviceIface = {
    /* .get_name             = */ dev_get_name,
    /* .get_description      = */ dev_get_description,
    /* .get_memory           = */ dev_get_memory,
    /* .get_type             = */ dev_get_type,
    /* .get_props            = */ dev_get_props,
    /* .init_backend         = */ dev_init_backend,
    /* .get_buffer_type      = */ dev_get_buffer_type,
    /* .get_host_buffer_type = */ nullptr,
    /* .buffer_from_host_ptr = */ nullptr,
    /* .supports_op          = */ dev_supports_op,
    /* .supports_buft        = */ dev_supports_buft,
    /* .offload_op           = */ nullptr,
    /* .event_new            = */ nullptr,
    /* .event_free           = */ nullptr,
    /* .event_synchronize    = */ nullptr,
    /* .reset                = */ nullptr,
};

// ---- llmrt's extra functions (simgpu.h) --------------------------------------

int sim_stats(int dev, llmrt_sim_stats_t * out, int reset_peak) {
    if (dev < 0 || dev >= (int) g_devices.size() || out == nullptr) {
        return -1;
    }
    sim_device * d = g_devices[dev].get();
    std::lock_guard<std::mutex> lock(d->mu);
    if (reset_peak) {
        d->peak = d->allocated;
    }
    *out = {d->total, d->allocated, d->peak, d->n_buffers, d->n_failed, d->n_graphs};
    return 0;
}

void sim_probe(uintptr_t * reg_count_addr, size_t * reg_count) {
    *reg_count_addr = reinterpret_cast<uintptr_t>(&ggml_backend_reg_count);
    *reg_count = ggml_backend_reg_count();
}

// ---- registry --------------------------------------------------------------

const char * reg_get_name(ggml_backend_reg_t) { return "SIM"; }

size_t reg_get_device_count(ggml_backend_reg_t) { return g_devices.size(); }

ggml_backend_dev_t reg_get_device(ggml_backend_reg_t, size_t index) {
    return index < g_devices.size() ? &g_devices[index]->dev : nullptr;
}

void * reg_get_proc_address(ggml_backend_reg_t, const char * name) {
    if (std::strcmp(name, "ggml_backend_set_n_threads") == 0) {
        return reinterpret_cast<void *>(stream_set_n_threads);
    }
    if (std::strcmp(name, "ggml_backend_set_abort_callback") == 0) {
        return reinterpret_cast<void *>(stream_set_abort_callback);
    }
    if (std::strcmp(name, "llmrt_sim_stats") == 0) {
        return reinterpret_cast<void *>(sim_stats);
    }
    if (std::strcmp(name, "llmrt_sim_probe") == 0) {
        return reinterpret_cast<void *>(sim_probe);
    }
    return nullptr;
}

const ggml_backend_reg_i kRegIface = {
    /* .get_name         = */ reg_get_name,
    /* .get_device_count = */ reg_get_device_count,
    /* .get_device       = */ reg_get_device,
    /* .get_proc_address = */ reg_get_proc_address,
};

// Parses one size: a positive number with an optional unit B, KiB, MiB,
// GiB, TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000), any case.
bool parse_size(const std::string & s, size_t * out) {
    const char * p = s.c_str();
    char * end = nullptr;
    double v = std::strtod(p, &end);
    if (end == p || !(v > 0)) {
        return false;
    }
    std::string unit(end);
    for (auto & c : unit) {
        c = (char) std::tolower((unsigned char) c);
    }
    double mul;
    if (unit.empty() || unit == "b") {
        mul = 1;
    } else if (unit == "kib" || unit == "k") {
        mul = 1024.0;
    } else if (unit == "mib" || unit == "m") {
        mul = 1024.0 * 1024;
    } else if (unit == "gib" || unit == "g") {
        mul = 1024.0 * 1024 * 1024;
    } else if (unit == "tib" || unit == "t") {
        mul = 1024.0 * 1024 * 1024 * 1024;
    } else if (unit == "kb") {
        mul = 1e3;
    } else if (unit == "mb") {
        mul = 1e6;
    } else if (unit == "gb") {
        mul = 1e9;
    } else if (unit == "tb") {
        mul = 1e12;
    } else {
        return false;
    }
    const double bytes = v * mul;
    if (bytes < 1 || bytes > 1e18) {
        return false;
    }
    *out = (size_t) bytes;
    return true;
}

// Reads LLMRT_SIM_GPUS into sizes: comma-separated, blanks ignored; unset
// or blank gives none. False (and an error logged) when malformed.
bool parse_env(std::vector<size_t> * sizes) {
    const char * env = std::getenv("LLMRT_SIM_GPUS");
    std::string spec;
    for (const char * p = env ? env : ""; *p; p++) {
        if (!std::isspace((unsigned char) *p)) {
            spec += *p;
        }
    }
    if (spec.empty()) {
        return true;
    }
    size_t start = 0;
    while (start <= spec.size()) {
        size_t end = spec.find(',', start);
        if (end == std::string::npos) {
            end = spec.size();
        }
        const std::string item = spec.substr(start, end - start);
        size_t n;
        if (!parse_size(item, &n)) {
            GGML_LOG_ERROR("simgpu: LLMRT_SIM_GPUS=%s: bad size \"%s\" (want e.g. 2GiB,512MiB)\n", env, item.c_str());
            return false;
        }
        sizes->push_back(n);
        start = end + 1;
    }
    return true;
}

// Builds the registry once; later calls return the same one (ggml calls
// ggml_backend_init once per load, but a process may load the file twice).
ggml_backend_reg_t sim_reg() {
    static std::mutex mu;
    static bool done = false;
    static bool ok = false;
    std::lock_guard<std::mutex> lock(mu);
    if (done) {
        return ok ? &g_reg : nullptr;
    }
    done = true;
    std::vector<size_t> sizes;
    if (!parse_env(&sizes)) {
        return nullptr;
    }
    if (const char * refuse = std::getenv("LLMRT_SIM_GPUS_REFUSE")) {
        for (int op = 0; op < GGML_OP_COUNT; op++) {
            const std::string name = ggml_op_name((ggml_op) op);
            const std::string list = std::string(",") + refuse + ",";
            if (list.find("," + name + ",") != std::string::npos) {
                g_refused[op] = true;
                GGML_LOG_INFO("simgpu: refusing %s (LLMRT_SIM_GPUS_REFUSE)\n", name.c_str());
            }
        }
    }
    if (sizes.size() > 16) {
        GGML_LOG_ERROR("simgpu: %zu devices requested, at most 16\n", sizes.size());
        return nullptr;
    }
    g_reg = {GGML_BACKEND_API_VERSION, kRegIface, nullptr};
    for (size_t i = 0; i < sizes.size(); i++) {
        auto d = std::make_unique<sim_device>();
        char buf[64];
        d->name = "SIM" + std::to_string(i);
        d->description = "llmrt simulated GPU";
        // Fixed, distinct, and outside the bus numbers real GPUs usually get.
        std::snprintf(buf, sizeof(buf), "0000:%02zx:00.0", 0xe0 + i);
        d->pci_bus_id = buf;
        std::snprintf(buf, sizeof(buf), "GPU-5111a7ed-0000-4000-8000-%012zx", i);
        d->uuid = buf;
        d->total = sizes[i];
        d->dev = {kDeviceIface, &g_reg, d.get()};
        d->buft = {kBuftIface, &d->dev, d.get(), /* no_alloc */ false};
        GGML_LOG_INFO("simgpu: %s (%s, %s) with %zu MiB\n", d->name.c_str(), d->pci_bus_id.c_str(), d->uuid.c_str(),
                      d->total / (1024 * 1024));
        g_devices.push_back(std::move(d));
    }
    if (g_devices.empty()) {
        GGML_LOG_INFO("simgpu: LLMRT_SIM_GPUS is not set: no simulated devices\n");
    }
    ok = true;
    return &g_reg;
}

} // namespace

GGML_BACKEND_DL_IMPL(sim_reg)
