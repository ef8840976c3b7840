// decoder.c: the decode thread (see decoder.h).
#include "decoder.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct llmrt_decoder {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct llama_context * ctx;
    struct llama_batch batch;
    int pending; // a batch waits for the thread
    int quit;
    int rc;      // written by the thread before it signals the eventfd
    int fd;
};

static void * decoder_main(void * arg) {
    llmrt_decoder * d = (llmrt_decoder *) arg;
    for (;;) {
        pthread_mutex_lock(&d->mu);
        while (!d->pending && !d->quit) pthread_cond_wait(&d->cv, &d->mu);
        if (d->quit) {
            pthread_mutex_unlock(&d->mu);
            return NULL;
        }
        d->pending = 0;
        struct llama_batch b = d->batch;
        pthread_mutex_unlock(&d->mu);

        int rc = llama_decode(d->ctx, b);
        pthread_mutex_lock(&d->mu);
        d->rc = rc;
        pthread_mutex_unlock(&d->mu);
        // The Go side waits on this: the write orders rc before its read.
        // A failed write (never on an eventfd below its limit) would
        // leave the waiter hanging, so retry on EINTR.
        uint64_t one = 1;
        while (write(d->fd, &one, sizeof one) < 0) {
        }
    }
}

llmrt_decoder * llmrt_decoder_new(struct llama_context * ctx) {
    llmrt_decoder * d = (llmrt_decoder *) calloc(1, sizeof *d);
    if (d == NULL) return NULL;
    d->ctx = ctx;
    d->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (d->fd < 0) {
        free(d);
        return NULL;
    }
    if (pthread_mutex_init(&d->mu, NULL) != 0) goto fail_fd;
    if (pthread_cond_init(&d->cv, NULL) != 0) goto fail_mu;
    if (pthread_create(&d->thread, NULL, decoder_main, d) != 0) goto fail_cv;
    return d;
fail_cv:
    pthread_cond_destroy(&d->cv);
fail_mu:
    pthread_mutex_destroy(&d->mu);
fail_fd:
    close(d->fd);
    free(d);
    return NULL;
}

int llmrt_decoder_fd(const llmrt_decoder * d) { return d->fd; }

void llmrt_decoder_submit(llmrt_decoder * d, struct llama_batch batch) {
    pthread_mutex_lock(&d->mu);
    d->batch = batch;
    d->pending = 1;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

int llmrt_decoder_result(const llmrt_decoder * d) {
    pthread_mutex_lock((pthread_mutex_t *) &d->mu);
    int rc = d->rc;
    pthread_mutex_unlock((pthread_mutex_t *) &d->mu);
    return rc;
}

void llmrt_decoder_free(llmrt_decoder * d) {
    if (d == NULL) return;
    pthread_mutex_lock(&d->mu);
    d->quit = 1;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    pthread_join(d->thread, NULL);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
    close(d->fd);
    free(d);
}
