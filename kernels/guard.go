package kernels

/*
#include "guard.h"
*/
import "C"

import "fmt"

// guardErr receives the message of a C++ exception that a guard.h wrapper
// caught at the cgo boundary.
type guardErr struct{ c C.llmrt_err }

// p is the wrapper's err argument.
func (g *guardErr) p() *C.llmrt_err { return &g.c }

// caught reports whether a wrapper wrote a message.
func (g *guardErr) caught() bool { return g.c.msg[0] != 0 }

func (g *guardErr) message() string { return C.GoString(&g.c.msg[0]) }

// err is the Go error for a caught exception during what.
func (g *guardErr) err(what string) error {
	return fmt.Errorf("%s: llama.cpp failed: %s", what, g.message())
}
