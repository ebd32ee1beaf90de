/*
 * Framed, reference-counted messages. A message is framed once and shared by
 * every recipient's send queue. Blocks come from per-loop free lists when the
 * message is made on a loop thread, so echoing and fan-out from callbacks do
 * not call malloc per message once the lists are warm.
 */
#include "engine_internal.h"

#include <stdlib.h>
#include <string.h>

#define CWS_MSG_MIN_SHIFT 8 /* smallest class: 256 B */

/* Free blocks a loop keeps of class k: large blocks are kept too (a freed
 * 64 KiB block would otherwise go back to the kernel and fault in again on
 * the next large message), but within a byte budget per class. */
static uint32_t cws_msg_pool_cap(uint8_t k) {
    uint32_t by_bytes = CWS_MSG_POOL_CLASS_BYTES >> (CWS_MSG_MIN_SHIFT + k);
    if (by_bytes < 1) by_bytes = 1;
    return by_bytes < CWS_MSG_POOL_CAP ? by_bytes : CWS_MSG_POOL_CAP;
}

static uint8_t cws_msg_class(size_t total) {
    for (uint8_t k = 0; k < CWS_MSG_CLASSES; k++)
        if (total <= ((size_t)1 << (CWS_MSG_MIN_SHIFT + k))) return k;
    return CWS_MSG_NO_CLASS;
}

cws_msg *cws_msg_alloc(size_t len) {
    size_t total = sizeof(cws_msg) + len;
    uint8_t k = cws_msg_class(total);
    cws_loop *l = cws_current_loop;
    cws_msg *m = NULL;
    if (k != CWS_MSG_NO_CLASS) {
        if (l && l->pool.count[k]) {
            m = l->pool.free[k][--l->pool.count[k]];
        } else {
            m = malloc((size_t)1 << (CWS_MSG_MIN_SHIFT + k));
        }
    } else {
        m = malloc(total);
    }
    if (!m) return NULL;
    atomic_init(&m->refs, 1);
    m->opcode = CWS_MSG_RAW;
    m->size_class = k;
    m->hdr_len = 0;
    m->zbits = 0;
    m->len = len;
    atomic_init(&m->zvar, NULL);
    return m;
}

cws_msg *cws_msg_frame(uint8_t opcode, const void *payload, size_t len) {
    return cws_msg_frame_rsv(opcode, 0, payload, len);
}

cws_msg *cws_msg_frame_rsv(uint8_t opcode, uint8_t rsv, const void *payload, size_t len) {
    size_t h = cws_frame_header_size(len, 0);
    cws_msg *m = cws_msg_alloc(h + len);
    if (!m) return NULL;
    m->opcode = opcode;
    m->hdr_len = (uint8_t)h;
    cws_frame_header_encode(m->data, 1, rsv, opcode, len, 0, 0);
    if (len) memcpy(m->data + h, payload, len);
    return m;
}

cws_msg *cws_msg_new(uint8_t opcode, const void *data, size_t len) {
    return cws_msg_frame(opcode, data, len);
}

void cws_msg_retain(cws_msg *m) {
    /* Relaxed: a new reference is made from an existing one, which already
     * orders the message's contents for this thread. */
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void cws_msg_release(cws_msg *m) {
    if (!m) return;
    /* acq_rel: every holder's use of the bytes happens before the block is
     * reused or freed. Same cost on x86 as release + fence, and ThreadSanitizer
     * understands it (it does not model a standalone fence). */
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1) return;
    cws_msg *z = atomic_load_explicit(&m->zvar, memory_order_relaxed);
    if (z && z != m) cws_msg_release(z);
    cws_loop *l = cws_current_loop;
    uint8_t k = m->size_class;
    if (l && k != CWS_MSG_NO_CLASS && l->pool.count[k] < cws_msg_pool_cap(k)) {
        if (!l->pool.free[k]) {
            l->pool.free[k] = malloc(cws_msg_pool_cap(k) * sizeof(cws_msg *));
            if (!l->pool.free[k]) {
                free(m);
                return;
            }
        }
        l->pool.free[k][l->pool.count[k]++] = m;
        return;
    }
    free(m);
}

void cws_msg_pool_free(cws_msg_pool *p) {
    for (int k = 0; k < CWS_MSG_CLASSES; k++) {
        for (uint32_t i = 0; i < p->count[k]; i++) free(p->free[k][i]);
        free(p->free[k]);
        p->free[k] = NULL;
        p->count[k] = 0;
    }
}
