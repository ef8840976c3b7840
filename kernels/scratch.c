// scratch.c: per-thread scratch buffers for the CPU kernels (scratch.h).
#include "scratch.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct {
    void * p[LLMRT_SCRATCH_SLOTS];
    size_t cap[LLMRT_SCRATCH_SLOTS];
} scratch_set;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ok;

static void scratch_free(void * v) {
    scratch_set * s = (scratch_set *) v;
    if (s == NULL) return;
    for (int i = 0; i < LLMRT_SCRATCH_SLOTS; i++) free(s->p[i]);
    free(s);
}

static void scratch_key_init(void) { scratch_key_ok = pthread_key_create(&scratch_key, scratch_free) == 0; }

void * llmrt_scratch(int slot, size_t bytes) {
    if (slot < 0 || slot >= LLMRT_SCRATCH_SLOTS) return NULL;
    if (pthread_once(&scratch_once, scratch_key_init) != 0 || !scratch_key_ok) return NULL;
    scratch_set * s = (scratch_set *) pthread_getspecific(scratch_key);
    if (s == NULL) {
        s = (scratch_set *) calloc(1, sizeof(*s));
        if (s == NULL) return NULL;
        if (pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->cap[slot] < bytes) {
        const size_t rounded = (bytes + 63) / 64 * 64; // aligned_alloc wants a multiple of the alignment
        void * p = aligned_alloc(64, rounded);
        if (p == NULL) return NULL;
        free(s->p[slot]);
        s->p[slot] = p;
        s->cap[slot] = rounded;
    }
    return s->p[slot];
}
