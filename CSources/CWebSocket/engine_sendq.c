/*
 * The per-connection send queue: a ring of framed messages with their write
 * offsets, the loop's flush list, and what happens when the queue drains.
 */
#include "engine_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

/* ---- send queue ------------------------------------------------------------ */

void cws_conn_mark_dirty(cws_loop *l, cws_conn *c) {
    if (c->flags & CWS_CF_DIRTY) return;
    if (l->ndirty == l->dirty_cap) {
        uint32_t cap = l->dirty_cap ? l->dirty_cap * 2 : 64;
        cws_conn_id *n = realloc(l->dirty, cap * sizeof *n);
        if (!n) {
            /* Flush right away instead of later. */
            l->srv->ops->conn_flush(l, c);
            return;
        }
        l->dirty = n;
        l->dirty_cap = cap;
    }
    c->flags |= CWS_CF_DIRTY;
    l->dirty[l->ndirty++] = cws_conn_id_of(l, c);
}

static int cws_sendq_room(cws_loop *l, cws_conn *c) {
    if (c->qcount < c->qcap) return 0;
    uint32_t cap = c->qcap ? c->qcap * 2 : 4;
    cws_sendq_entry *n = malloc(cap * sizeof *n);
    if (!n) return -ENOMEM;
    if (!c->q) CWS_STAT_ADD(l, send_rings, 1);
    for (uint32_t i = 0; i < c->qcount; i++) n[i] = c->q[(c->qhead + i) & (c->qcap - 1)];
    free(c->q);
    c->q = n;
    c->qcap = cap;
    c->qhead = 0;
    return 0;
}

int cws_sendq_insert(cws_loop *l, cws_conn *c, uint32_t at, cws_msg *m) {
    if (at >= c->qcount) return cws_sendq_push(l, c, m);
    if (cws_sendq_room(l, c) < 0) return -ENOMEM;
    for (uint32_t i = c->qcount; i > at; i--)
        c->q[(c->qhead + i) & (c->qcap - 1)] = c->q[(c->qhead + i - 1) & (c->qcap - 1)];
    cws_msg_retain(m);
    c->q[(c->qhead + at) & (c->qcap - 1)] = (cws_sendq_entry){m, 0};
    c->qcount++;
    c->qbytes += m->len;
    atomic_store_explicit(&c->slotp->queued, c->qbytes, memory_order_relaxed);
    cws_conn_mark_dirty(l, c);
    return 0;
}

/* Appends m (taking a new reference). Returns 0 or -ENOMEM. */
int cws_sendq_push(cws_loop *l, cws_conn *c, cws_msg *m) {
    if (cws_sendq_room(l, c) < 0) return -ENOMEM;
    cws_msg_retain(m);
    c->q[(c->qhead + c->qcount) & (c->qcap - 1)] = (cws_sendq_entry){m, 0};
    c->qcount++;
    c->qbytes += m->len;
    atomic_store_explicit(&c->slotp->queued, c->qbytes, memory_order_relaxed);
    cws_conn_mark_dirty(l, c);
    return 0;
}

#define CWS_PONG_COALESCE_BYTES (64u << 10)

int cws_sendq_replace_tail_pong(cws_conn *c, cws_msg *pong) {
    /* A peer that keeps up gets a pong for every ping (Autobahn 2.10 checks
     * it); one whose queue has backed up gets the newest only. */
    if (c->qbytes < CWS_PONG_COALESCE_BYTES || !c->qcount || c->qcount <= c->qsending) return 0;
    cws_sendq_entry *e = &c->q[(c->qhead + c->qcount - 1) & (c->qcap - 1)];
    if (e->msg->opcode != CWS_OP_PONG || e->off) return 0;
    c->qbytes = c->qbytes - e->msg->len + pong->len;
    atomic_store_explicit(&c->slotp->queued, c->qbytes, memory_order_relaxed);
    cws_msg_release(e->msg);
    cws_msg_retain(pong);
    e->msg = pong;
    return 1;
}

int cws_conn_iov(const cws_conn *c, struct iovec *iov, int max) {
    return cws_conn_gather_iov(c, iov, max, NULL, 0, 0, NULL);
}

int cws_conn_gather_iov(const cws_conn *c, struct iovec *iov, int max, uint8_t *gather, size_t cap, size_t small,
                        uint32_t *entries) {
    int n = 0, gi = -1; /* gi: the iovec that ends where the gather buffer's used part does */
    size_t used = 0;
    uint32_t i;
    for (i = 0; i < c->qcount; i++) {
        const cws_sendq_entry *e = &c->q[(c->qhead + i) & (c->qcap - 1)];
        /* TLS: plaintext not yet sealed never reaches the socket. */
        if (c->tls && e->msg->opcode != CWS_MSG_SEALED && !cws_tls_kernel_sends(c)) break;
        uint8_t *p = e->msg->data + e->off;
        size_t len = e->msg->len - e->off;
        /* A full gather buffer does not end the write: what does not fit
         * takes an iovec of its own (with io_uring's 1 KiB buffer, stopping
         * there sent a fan-out burst of 16 x 131 B in three writes, not one). */
        if (gather && len <= small && used + len <= cap) {
            if (gi < 0 || gi != n - 1) {
                if (n == max) break;
                gi = n++;
                iov[gi].iov_base = gather + used;
                iov[gi].iov_len = 0;
            }
            memcpy(gather + used, p, len);
            used += len;
            iov[gi].iov_len += len;
        } else {
            if (n == max) break;
            iov[n].iov_base = p;
            iov[n].iov_len = len;
            n++;
        }
    }
    if (entries) *entries = i;
    return n;
}

void cws_sendq_free_ring(cws_loop *l, cws_conn *c) {
    if (!c->q) return;
    free(c->q);
    c->q = NULL;
    c->qcap = c->qhead = 0;
    c->flags &= (uint16_t)~CWS_CF_QONCE;
    CWS_STAT_ADD(l, send_rings, (uint64_t)-1);
}

void cws_sendq_clear(cws_conn *c) {
    for (uint32_t i = 0; i < c->qcount; i++) cws_msg_release(c->q[(c->qhead + i) & (c->qcap - 1)].msg);
    c->qcount = 0;
    c->qhead = 0;
    c->qbytes = 0;
    if (c->slotp) atomic_store_explicit(&c->slotp->queued, 0, memory_order_relaxed);
}


void cws_conn_wrote(cws_loop *l, cws_conn *c, size_t n) {
    while (n && c->qcount) {
        cws_sendq_entry *e = &c->q[c->qhead];
        size_t left = e->msg->len - e->off;
        if (n < left) {
            e->off += n;
            c->qbytes -= n;
            break;
        }
        n -= left;
        c->qbytes -= left;
        cws_msg_release(e->msg);
        c->qhead = (c->qhead + 1) & (c->qcap - 1);
        c->qcount--;
    }
    /* May run on_drain, which may queue more or close (both handled below). */
    cws_conn_queue_changed(l, c);
    if (c->qcount || c->state == CWS_CONN_DEAD) return;
    /* Drained: a ring that grew in a burst, or that only carried the 101 or
     * the idle ping, goes (an idle connection keeps no queue: 10,000 quiet
     * ones kept 640 KB of rings until their idle pings; a busy one keeps a
     * small ring so steady traffic does not allocate). */
    if (c->q && (c->qcap > CWS_SENDQ_KEEP || (c->flags & (CWS_CF_PING_SENT | CWS_CF_QONCE))))
        cws_sendq_free_ring(l, c);
    if (c->flags & CWS_CF_SHUT_AFTER) {
        /* TLS: close_notify goes first; this runs again once it is written. */
        if (cws_tls_close_notify(l, c)) return;
        c->flags &= (uint16_t)~CWS_CF_SHUT_AFTER;
        /* Half-close and read until the peer's FIN: closing with unread input
         * would send an RST that can destroy our close frame in flight. */
        if (shutdown(c->fd, SHUT_WR) < 0 && errno != ENOTCONN) {
            cws_conn_finish(l, c);
            return;
        }
        /* A graceful stop does not wait for the peer's FIN. */
        if (l->stopping) {
            cws_conn_finish(l, c);
            return;
        }
        c->state = CWS_CONN_DRAINING;
        c->flags |= CWS_CF_READ_DONE;
        cws_timer_set(l, c, l->srv->cfg.close_timeout_ms);
        cws_conn_report(l, c);
    }
}
