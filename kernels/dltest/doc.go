// Package dltest holds the test of loading a ggml backend from a shared
// library. It is a package of its own because a loaded backend stays
// registered for the life of the process and, scoring above the built-in
// one, would take over the CPU work of every later test in the binary.
package dltest
