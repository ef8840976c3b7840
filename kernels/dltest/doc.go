// Package dltest holds the tests of loading a ggml backend from a shared
// library. It is a package of its own because a loaded backend stays
// registered for the life of the process and, scoring above the built-in
// one, would be listed first for every later test in the binary.
//
// The binary exports its statically linked ggml (kernels links with
// -rdynamic), so the CMake-built backend's ggml calls bind to it, including
// its ggml_backend_cpu_reg: loading it registers the executable's own CPU
// backend a second time rather than a CPU backend of its own.
package dltest
