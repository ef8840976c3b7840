#pragma once
#include "llama.h"

// A decode thread: a persistent pthread that runs llama_decode for one
// context, so that Go does not sit in a cgo call for the whole step.
// Why: a cgo call of more than 10 ms (a decode step on a CPU) makes Go's
// sysmon take the goroutine's P and then poll every 20 us for a while; on
// a 2-core machine each of those wake-ups preempts a ggml worker thread
// (thousands per second, measured). Waiting on an eventfd through Go's
// netpoller instead parks the goroutine, and sysmon stays asleep.
typedef struct llmrt_decoder llmrt_decoder;

// Starts the thread. Returns NULL when a thread or eventfd cannot be made.
llmrt_decoder * llmrt_decoder_new(struct llama_context * ctx);

// The eventfd (non-blocking) that reads 1 when a submitted decode is done.
int llmrt_decoder_fd(const llmrt_decoder * d);

// Hands a batch to the thread. The caller must not touch the context or
// the batch until the eventfd signals.
void llmrt_decoder_submit(llmrt_decoder * d, struct llama_batch batch);

// llama_decode's return code of the last finished decode.
int llmrt_decoder_result(const llmrt_decoder * d);

// Stops and joins the thread and closes the eventfd. No decode may be in
// flight.
void llmrt_decoder_free(llmrt_decoder * d);
