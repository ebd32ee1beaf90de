/* Private to the io_uring backend and its probe. Not installed. */
#ifndef CWS_ENGINE_URING_H
#define CWS_ENGINE_URING_H

#include "engine_internal.h"

#include <liburing.h>

/* A ring with the flags every loop uses (falling back to none on older kernels). */
int cws_ur_queue_init(struct io_uring *ring, unsigned extra);
/* Tears a ring down; every ring cws_ur_queue_init made ends here. */
void cws_ur_queue_exit(struct io_uring *ring);
/* A provided-buffer ring of `entries` (a power of two) registered as group bgid;
 * NULL with -errno in *err. */
struct io_uring_buf_ring *cws_ur_buf_ring(struct io_uring *ring, unsigned entries, int bgid, int *err);

#endif
