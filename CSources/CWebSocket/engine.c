/*
 * The server engine's connection state machine, shared by both backends:
 * handshake -> open -> closing -> (draining) -> dead.
 *
 * The backend reports accepts, input, EOF and completed writes; this file
 * decides everything else. Connections are only freed from the loop's own
 * turn (never inside a user callback), so a callback can send or close
 * without the connection disappearing under the frame parser.
 */
#include "engine_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

__thread cws_loop *cws_current_loop;

#define CWS_STAT_ADD(l, field, n) \
    atomic_store_explicit(&(l)->stats.field, \
                          atomic_load_explicit(&(l)->stats.field, memory_order_relaxed) + (n), \
                          memory_order_relaxed)

/* ---- ids and slots ------------------------------------------------------- */

/* id = generation (32) | loop (8) | slot (24). The generation starts at 1, so
 * an id is never 0, and it changes when a connection ends, so a stale id
 * never reaches the slot's next connection. */
static inline cws_conn_id cws_make_id(uint32_t loop, uint32_t slot, uint32_t gen) {
    return ((uint64_t)gen << 32) | ((uint64_t)loop << CWS_SLOT_BITS) | slot;
}
static inline uint32_t cws_id_loop(cws_conn_id id) { return (uint32_t)(id >> CWS_SLOT_BITS) & 0xFF; }
static inline uint32_t cws_id_slot(cws_conn_id id) { return (uint32_t)id & ((1u << CWS_SLOT_BITS) - 1); }
static inline uint32_t cws_id_gen(cws_conn_id id) { return (uint32_t)(id >> 32); }

static inline cws_conn_id cws_conn_id_of(const cws_loop *l, const cws_conn *c) {
    return cws_make_id(l->index, c->slot, c->gen);
}

static cws_slot *cws_slot_at(const cws_loop *l, uint32_t slot) {
    cws_slot *chunk = atomic_load_explicit(&l->chunks[slot >> CWS_SLOT_CHUNK_BITS], memory_order_acquire);
    return chunk ? &chunk[slot & (CWS_SLOT_CHUNK - 1)] : NULL;
}

cws_conn *cws_loop_conn(cws_loop *l, cws_conn_id id) {
    uint32_t slot = cws_id_slot(id);
    if (slot >= l->nslots) return NULL;
    cws_slot *s = cws_slot_at(l, slot);
    cws_conn *c = s->conn;
    if (!c || c->gen != cws_id_gen(id) || c->state == CWS_CONN_DEAD) return NULL;
    return c;
}

/* Any thread: 0 if the id may still be live, -ENOENT if it surely is not. */
static int cws_id_check(cws_server *s, cws_conn_id id, cws_loop **out) {
    uint32_t li = cws_id_loop(id);
    if (!s || li >= s->nloops || cws_id_gen(id) == 0) return -ENOENT;
    cws_loop *l = &s->loops[li];
    cws_slot *slot = cws_slot_at(l, cws_id_slot(id));
    if (!slot || atomic_load_explicit(&slot->gen, memory_order_acquire) != cws_id_gen(id)) return -ENOENT;
    *out = l;
    return 0;
}

static int cws_slot_alloc(cws_loop *l, uint32_t *out) {
    if (l->nfree) {
        *out = l->free_slots[--l->nfree];
        return 0;
    }
    uint32_t slot = l->nslots;
    if (slot >= (1u << CWS_SLOT_BITS)) return -1;
    uint32_t ci = slot >> CWS_SLOT_CHUNK_BITS;
    if (!atomic_load_explicit(&l->chunks[ci], memory_order_relaxed)) {
        cws_slot *chunk = calloc(CWS_SLOT_CHUNK, sizeof *chunk);
        if (!chunk) return -1;
        for (uint32_t i = 0; i < CWS_SLOT_CHUNK; i++) atomic_init(&chunk[i].gen, 1);
        atomic_store_explicit(&l->chunks[ci], chunk, memory_order_release);
    }
    l->nslots++;
    *out = slot;
    return 0;
}

static void cws_slot_free(cws_loop *l, uint32_t slot) {
    if (l->nfree == l->free_cap) {
        uint32_t cap = l->free_cap ? l->free_cap * 2 : 256;
        uint32_t *n = realloc(l->free_slots, cap * sizeof *n);
        if (!n) return; /* the slot leaks; the id space is large */
        l->free_slots = n;
        l->free_cap = cap;
    }
    l->free_slots[l->nfree++] = slot;
}

/* ---- send queue ------------------------------------------------------------ */

static void cws_mark_dirty(cws_loop *l, cws_conn *c) {
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

/* Appends m (taking a new reference). Returns 0 or -ENOMEM. */
static int cws_sendq_push(cws_loop *l, cws_conn *c, cws_msg *m) {
    if (c->qcount == c->qcap) {
        uint32_t cap = c->qcap ? c->qcap * 2 : 4;
        cws_sendq_entry *n = malloc(cap * sizeof *n);
        if (!n) return -ENOMEM;
        for (uint32_t i = 0; i < c->qcount; i++) n[i] = c->q[(c->qhead + i) & (c->qcap - 1)];
        free(c->q);
        c->q = n;
        c->qcap = cap;
        c->qhead = 0;
    }
    cws_msg_retain(m);
    c->q[(c->qhead + c->qcount) & (c->qcap - 1)] = (cws_sendq_entry){m, 0};
    c->qcount++;
    c->qbytes += m->len;
    cws_mark_dirty(l, c);
    return 0;
}

int cws_conn_iov(const cws_conn *c, struct iovec *iov, int max) {
    int n = 0;
    for (uint32_t i = 0; i < c->qcount && n < max; i++) {
        const cws_sendq_entry *e = &c->q[(c->qhead + i) & (c->qcap - 1)];
        iov[n].iov_base = e->msg->data + e->off;
        iov[n].iov_len = e->msg->len - e->off;
        n++;
    }
    return n;
}

static void cws_sendq_clear(cws_conn *c) {
    for (uint32_t i = 0; i < c->qcount; i++) cws_msg_release(c->q[(c->qhead + i) & (c->qcap - 1)].msg);
    c->qcount = 0;
    c->qhead = 0;
    c->qbytes = 0;
}

static void cws_conn_finish(cws_loop *l, cws_conn *c);
static void cws_conn_report(cws_loop *l, cws_conn *c);

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
    if (c->qcount || c->state == CWS_CONN_DEAD) return;
    /* Drained: a ring that grew in a burst, or that only carried the idle
     * ping, goes (an idle connection keeps no queue; a busy one keeps a small
     * ring so steady traffic does not allocate). */
    if (c->q && (c->qcap > CWS_SENDQ_KEEP || (c->flags & CWS_CF_PING_SENT))) {
        free(c->q);
        c->q = NULL;
        c->qcap = c->qhead = 0;
    }
    if (c->flags & CWS_CF_SHUT_AFTER) {
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

/* ---- permessage-deflate ----------------------------------------------------- */

static void cws_conn_fail(cws_loop *l, cws_conn *c, uint16_t code);
static void cws_conn_deliver(cws_loop *l, cws_conn *c, uint8_t opcode, const void *data, size_t len);

/* Decompressors for connections without client context takeover are the
 * loop's: taken for one message, reset and given back, so an idle connection
 * holds no zlib state. A 15-bit window inflates any client's stream. */
static cws_inflater *cws_loop_inflater_get(cws_loop *l) {
    if (l->nzinf_idle) return l->zinf_idle[--l->nzinf_idle];
    return cws_inflater_new(15, 0);
}

static void cws_loop_inflater_put(cws_loop *l, cws_inflater *f) {
    if (!f) return;
    cws_inflater_reset(f);
    if (l->nzinf_idle < sizeof l->zinf_idle / sizeof l->zinf_idle[0]) l->zinf_idle[l->nzinf_idle++] = f;
    else cws_inflater_free(f);
}

/* The scratch buffer keeps its size between messages, up to a point: one
 * huge message must not pin megabytes for the life of the loop. */
static void cws_loop_zbuf_trim(cws_loop *l) {
    l->zbuf.len = 0;
    if (l->zbuf.cap > (1u << 20)) cws_buffer_free(&l->zbuf);
}

static void cws_conn_zfree(cws_loop *l, cws_conn *c) {
    cws_deflater_free(c->zdef);
    c->zdef = NULL;
    if (c->zinf) {
        if (c->pmd & CWS_PMD_CLIENT_NCT) cws_loop_inflater_put(l, c->zinf);
        else cws_inflater_free(c->zinf);
        c->zinf = NULL;
    }
}

/*
 * The frame to queue on c for the data message m: m itself (small, or not
 * smaller compressed), m's shared compressed variant (no server context
 * takeover: made once by whichever loop needs it first), or a frame compressed
 * with c's own context. Returns a new reference, or NULL (out of memory).
 */
static cws_msg *cws_conn_compress(cws_loop *l, cws_conn *c, cws_msg *m) {
    const cws_deflate_config *dc = &l->srv->cfg.deflate;
    const uint8_t *payload = m->data + m->hdr_len;
    size_t plen = m->len - m->hdr_len;
    if (plen < dc->min_size) {
        cws_msg_retain(m);
        return m;
    }
    if (!(c->pmd & CWS_PMD_SERVER_NCT)) {
        if (!c->zdef && !(c->zdef = cws_deflater_new(dc->level, dc->mem_level, c->z_sbits, 1))) return NULL;
        l->zbuf.len = 0;
        cws_msg *z = NULL;
        if (cws_deflater_message(c->zdef, payload, plen, &l->zbuf) == 0)
            z = cws_msg_frame_rsv(m->opcode, CWS_RSV1, l->zbuf.data, l->zbuf.len);
        cws_loop_zbuf_trim(l);
        return z;
    }
    /* A variant made with a window no bigger than c's is valid for c. */
    cws_msg *v = atomic_load_explicit(&m->zvar, memory_order_acquire);
    if (v && (v == m || v->zbits <= c->z_sbits)) {
        cws_msg_retain(v);
        return v;
    }
    cws_deflater **dp = &l->zdef[c->z_sbits - 8];
    if (!*dp && !(*dp = cws_deflater_new(dc->level, dc->mem_level, c->z_sbits, 0))) return NULL;
    l->zbuf.len = 0;
    if (cws_deflater_message(*dp, payload, plen, &l->zbuf) < 0) {
        cws_loop_zbuf_trim(l);
        return NULL;
    }
    cws_msg *made = m;
    if (l->zbuf.len < plen) {
        made = cws_msg_frame_rsv(m->opcode, CWS_RSV1, l->zbuf.data, l->zbuf.len);
        if (!made) {
            cws_loop_zbuf_trim(l);
            return NULL;
        }
        made->zbits = c->z_sbits;
    } else {
        cws_msg_retain(m); /* not smaller: send the message as it is */
    }
    cws_loop_zbuf_trim(l);
    if (!v) {
        /* Publish it; the slot holds its own reference. If another loop got
         * there first, keep ours for this send and let theirs serve the rest. */
        cws_msg *expected = NULL;
        if (made != m) cws_msg_retain(made);
        if (!atomic_compare_exchange_strong_explicit(&m->zvar, &expected, made, memory_order_acq_rel,
                                                     memory_order_acquire) &&
            made != m)
            cws_msg_release(made);
    }
    return made;
}

/* A piece of a compressed data message. Returns -1 if the connection failed. */
static int cws_conn_zinput(cws_loop *l, cws_conn *c, uint8_t op, const cws_frame_event *ev) {
    uint64_t max = l->srv->cfg.max_message_size;
    int last = ev->frame_end && ev->header.fin;
    int whole = ev->message_start && ev->frame_start && last;
    int shared = (c->pmd & CWS_PMD_CLIENT_NCT) != 0;
    cws_utf8_state *u = op == CWS_OP_TEXT ? &c->utf8 : NULL;
    cws_inflater *f;
    if (whole && shared) {
        f = cws_loop_inflater_get(l);
    } else {
        /* Takeover: c's own context for its life. Otherwise borrow one of the
         * loop's until this message is complete. */
        if (!c->zinf) c->zinf = shared ? cws_loop_inflater_get(l) : cws_inflater_new(c->z_cbits, 1);
        f = c->zinf;
    }
    if (!f) {
        cws_conn_fail(l, c, CWS_CLOSE_INTERNAL_ERROR);
        return -1;
    }
    int rc;
    if (whole) {
        /* The whole message is here: inflate into the loop's scratch. */
        l->zbuf.len = 0;
        rc = cws_inflater_feed(f, ev->payload, ev->payload_len, 1, &l->zbuf, max, u);
        if (shared) cws_loop_inflater_put(l, f);
        if (rc == 0 && u && cws_utf8_finish(u) != CWS_UTF8_VALID) rc = -CWS_CLOSE_INVALID_PAYLOAD;
        if (rc == 0) cws_conn_deliver(l, c, op, l->zbuf.data, l->zbuf.len);
        cws_loop_zbuf_trim(l);
    } else {
        /* In pieces: inflate into the reassembly buffer as they come. */
        cws_buffer b = {c->rbuf, c->rlen, c->rcap};
        rc = cws_inflater_feed(f, ev->payload, ev->payload_len, last, &b, max, u);
        c->rbuf = b.data;
        c->rlen = (uint32_t)b.len;
        c->rcap = (uint32_t)b.cap;
        if (rc == 0 && last && u && cws_utf8_finish(u) != CWS_UTF8_VALID) rc = -CWS_CLOSE_INVALID_PAYLOAD;
        if (rc == 0 && last) {
            if (shared) {
                cws_loop_inflater_put(l, c->zinf);
                c->zinf = NULL;
            }
            cws_conn_deliver(l, c, op, c->rbuf, c->rlen);
            free(c->rbuf);
            c->rbuf = NULL;
            c->rlen = c->rcap = 0;
        }
    }
    if (rc < 0) {
        cws_conn_fail(l, c, (uint16_t)-rc);
        return -1;
    }
    return 0;
}

/* ---- closing ------------------------------------------------------------- */

/* The WebSocket is over (the TCP connection may linger a little): make the
 * id stale and call on_close if it is owed. */
static void cws_conn_report(cws_loop *l, cws_conn *c) {
    if (c->flags & CWS_CF_REPORTED) return;
    c->flags |= CWS_CF_REPORTED;
    /* Bump the slot's generation first: from here on the id is stale for
     * every API call, including inside on_close. (c->gen stays, so the
     * backend's events still find the connection until it is released.) */
    cws_slot *s = cws_slot_at(l, c->slot);
    atomic_store_explicit(&s->gen, c->gen + 1 ? c->gen + 1 : 1, memory_order_release);
    if (c->flags & CWS_CF_OPENED) {
        CWS_STAT_ADD(l, connections, (uint64_t)-1);
        const cws_callbacks *cb = &l->srv->cfg.callbacks;
        uint16_t code = c->close_code ? c->close_code : CWS_CLOSE_ABNORMAL;
        if (cb->on_close)
            cb->on_close(cb->ctx, cws_conn_id_of(l, c), c->user, code, c->reason, c->reason_len);
    }
    free(c->reason);
    c->reason = NULL;
}

static void cws_conn_finish(cws_loop *l, cws_conn *c) {
    if (c->state == CWS_CONN_DEAD) return;
    c->state = CWS_CONN_DEAD;
    cws_timer_clear(l, c);
    cws_conn_report(l, c);
    free(c->rbuf);
    c->rbuf = NULL;
    c->rlen = c->rcap = 0;
    free(c->ctrl);
    c->ctrl = NULL;
    cws_conn_zfree(l, c);
    l->srv->ops->conn_close(l, c);
}

/* Freed at the end of the turn, not now: callers up the stack (the frame
 * loop, the event batch) may still look at c->state, which says DEAD. */
void cws_conn_release(cws_loop *l, cws_conn *c) {
    c->timer_next = l->graveyard;
    l->graveyard = c;
}

static void cws_loop_bury(cws_loop *l) {
    while (l->graveyard) {
        cws_conn *c = l->graveyard;
        l->graveyard = c->timer_next;
        cws_sendq_clear(c);
        free(c->q);
        cws_slot_at(l, c->slot)->conn = NULL;
        cws_slot_free(l, c->slot);
        l->live--;
        free(c);
    }
}

/* Queues raw bytes (an HTTP answer) and closes after they are written. */
static void cws_conn_answer(cws_loop *l, cws_conn *c, const void *bytes, size_t len) {
    cws_msg *m = cws_msg_alloc(len);
    if (!m) {
        cws_conn_finish(l, c);
        return;
    }
    memcpy(m->data, bytes, len);
    c->state = CWS_CONN_CLOSING;
    c->flags |= CWS_CF_SHUT_AFTER | CWS_CF_READ_DONE | CWS_CF_CLOSE_SENT;
    if (cws_sendq_push(l, c, m) < 0) cws_conn_finish(l, c);
    cws_msg_release(m);
    cws_timer_set(l, c, l->srv->cfg.close_timeout_ms);
}

static void cws_conn_http_error(cws_loop *l, cws_conn *c, int status) {
    char buf[192];
    size_t n = cws_http_error_response(buf, sizeof buf, status);
    cws_conn_answer(l, c, buf, n);
}

/* Queues a close frame. shut_after: close our side once it is written
 * (answering the peer's close, or failing) instead of waiting for the reply. */
static void cws_conn_send_close(cws_loop *l, cws_conn *c, cws_msg *frame, int shut_after) {
    if (c->flags & CWS_CF_CLOSE_SENT) return;
    c->flags |= CWS_CF_CLOSE_SENT;
    c->state = CWS_CONN_CLOSING;
    if (shut_after) c->flags |= CWS_CF_SHUT_AFTER;
    if (cws_sendq_push(l, c, frame) < 0) {
        cws_conn_finish(l, c);
        return;
    }
    cws_timer_set(l, c, l->srv->cfg.close_timeout_ms);
}

static void cws_conn_close_with(cws_loop *l, cws_conn *c, uint16_t code, int shut_after) {
    uint8_t payload[2];
    size_t n = cws_close_payload_encode(payload, code, NULL, 0);
    cws_msg *m = cws_msg_frame(CWS_OP_CLOSE, payload, n);
    if (!m) {
        cws_conn_finish(l, c);
        return;
    }
    cws_conn_send_close(l, c, m, shut_after);
    cws_msg_release(m);
}

/* Fail the connection (RFC 6455 7.1.7): close frame with the code, then drop. */
static void cws_conn_fail(cws_loop *l, cws_conn *c, uint16_t code) {
    c->flags |= CWS_CF_READ_DONE;
    if (!c->close_code) c->close_code = code;
    if (c->flags & CWS_CF_CLOSE_SENT) {
        /* Our close is already out: nothing more may be sent; just drop. */
        if (!c->qcount) cws_conn_finish(l, c);
        else c->flags |= CWS_CF_SHUT_AFTER;
        return;
    }
    cws_conn_close_with(l, c, code, 1);
}

/* ---- sending on the owning loop ------------------------------------------ */

static int cws_conn_can_send(const cws_conn *c) {
    return c->state == CWS_CONN_OPEN && !(c->flags & CWS_CF_CLOSE_SENT);
}

/* Loop thread: queue a data message under the send-queue policy. */
static int cws_loop_send_frame(cws_loop *l, cws_conn *c, cws_msg *m);

static int cws_loop_send(cws_loop *l, cws_conn *c, cws_msg *m) {
    if (!cws_conn_can_send(c)) return -ENOENT;
    if (!c->pmd || !m->hdr_len || (m->opcode != CWS_OP_TEXT && m->opcode != CWS_OP_BINARY))
        return cws_loop_send_frame(l, c, m);
    cws_msg *z = cws_conn_compress(l, c, m);
    if (!z) {
        cws_conn_fail(l, c, CWS_CLOSE_INTERNAL_ERROR);
        return -ENOMEM;
    }
    int rc = cws_loop_send_frame(l, c, z);
    cws_msg_release(z);
    return rc;
}

static int cws_loop_send_frame(cws_loop *l, cws_conn *c, cws_msg *m) {
    const cws_server_config *cfg = &l->srv->cfg;
    /* An empty queue always takes one message, so a message as large as the
     * largest the server accepts can be echoed; the bound is then the limit
     * plus one message. */
    if (c->qbytes && c->qbytes + m->len > cfg->max_send_queue) {
        if (cfg->overflow_policy == CWS_OVERFLOW_DROP) {
            CWS_STAT_ADD(l, dropped, 1);
            return 0;
        }
        cws_conn_fail(l, c, CWS_CLOSE_POLICY_VIOLATION);
        return 0;
    }
    if (cws_sendq_push(l, c, m) < 0) return -ENOMEM;
    CWS_STAT_ADD(l, messages_out, 1);
    CWS_STAT_ADD(l, bytes_out, m->len);
    return 0;
}

/* Loop thread: close requested by the application. */
static void cws_loop_close(cws_loop *l, cws_conn *c, cws_msg *frame, uint16_t code) {
    if (c->state != CWS_CONN_OPEN) return;
    if (!c->close_code) c->close_code = code;
    cws_conn_send_close(l, c, frame, 0);
}

/* ---- input: frames --------------------------------------------------------- */

static void cws_conn_deliver(cws_loop *l, cws_conn *c, uint8_t opcode, const void *data, size_t len) {
    CWS_STAT_ADD(l, messages_in, 1);
    CWS_STAT_ADD(l, bytes_in, len);
    /* Once our close is out, the application has nothing to answer with. */
    if (c->flags & CWS_CF_CLOSE_SENT) return;
    const cws_callbacks *cb = &l->srv->cfg.callbacks;
    if (cb->on_message) cb->on_message(cb->ctx, cws_conn_id_of(l, c), c->user, opcode, data, len);
}

static int cws_rbuf_reserve(cws_conn *c, uint64_t extra) {
    uint64_t need = (uint64_t)c->rlen + extra;
    if (need <= c->rcap) return 0;
    if (need > UINT32_MAX) return -1;
    uint64_t cap = c->rcap ? c->rcap : 256;
    while (cap < need) cap *= 2;
    if (cap > UINT32_MAX) cap = need;
    uint8_t *n = realloc(c->rbuf, (size_t)cap);
    if (!n) return -1;
    c->rbuf = n;
    c->rcap = (uint32_t)cap;
    return 0;
}

static void cws_conn_control(cws_loop *l, cws_conn *c, uint8_t opcode, uint8_t *payload, size_t len) {
    if (opcode == CWS_OP_PING) {
        if (c->flags & CWS_CF_CLOSE_SENT) return;
        cws_msg *m = cws_msg_frame(CWS_OP_PONG, payload, len);
        if (!m) {
            cws_conn_finish(l, c);
            return;
        }
        /* Control frames bypass the queue limit: they are small and owed. */
        if (cws_sendq_push(l, c, m) < 0) cws_conn_finish(l, c);
        cws_msg_release(m);
        return;
    }
    if (opcode == CWS_OP_PONG) return; /* any input already counted as activity */
    /* CLOSE */
    uint16_t code;
    const uint8_t *reason;
    size_t reason_len;
    int bad = cws_close_payload_parse(payload, len, &code, &reason, &reason_len);
    if (bad) {
        cws_conn_fail(l, c, (uint16_t)bad);
        return;
    }
    c->flags |= CWS_CF_CLOSE_RECV | CWS_CF_READ_DONE;
    /* Report what the peer said, whether it answered our close or began one. */
    c->close_code = code;
    if (reason_len && (c->reason = malloc(reason_len))) {
        memcpy(c->reason, reason, reason_len);
        c->reason_len = (uint8_t)reason_len;
    }
    if (c->flags & CWS_CF_CLOSE_SENT) {
        /* The peer answered our close: the exchange is complete. */
        c->flags |= CWS_CF_SHUT_AFTER;
        if (!c->qcount) cws_conn_wrote(l, c, 0);
        return;
    }
    /* Echo the code (an empty close is answered with 1000). */
    cws_conn_close_with(l, c, code == CWS_CLOSE_NO_STATUS ? CWS_CLOSE_NORMAL : code, 1);
}

static void cws_conn_frames(cws_loop *l, cws_conn *c, uint8_t *p, size_t len) {
    const cws_server_config *cfg = &l->srv->cfg;
    while (len && !(c->flags & CWS_CF_READ_DONE) && c->state != CWS_CONN_DEAD) {
        size_t used;
        cws_frame_event ev;
        int rc = cws_parse(&c->parser, p, len, &used, &ev);
        p += used;
        len -= used;
        if (rc < 0) {
            cws_conn_fail(l, c, (uint16_t)-rc);
            return;
        }
        if (rc == CWS_PARSE_NEED_MORE) return;

        uint8_t op = ev.message_opcode;
        if (op >= CWS_OP_CLOSE) {
            if (ev.frame_start && ev.frame_end) {
                cws_conn_control(l, c, op, ev.payload, ev.payload_len);
                continue;
            }
            /* A control frame split across reads: gather its <= 125 bytes. */
            if (!c->ctrl && !(c->ctrl = malloc(125))) {
                cws_conn_finish(l, c);
                return;
            }
            memcpy(c->ctrl + ev.payload_offset, ev.payload, ev.payload_len);
            if (ev.frame_end) {
                cws_conn_control(l, c, op, c->ctrl, (size_t)ev.header.payload_len);
                free(c->ctrl);
                c->ctrl = NULL;
            }
            continue;
        }

        if (ev.message_start) {
            cws_utf8_init(&c->utf8);
            /* RSV1 is only accepted (by the parser) when compression was
             * negotiated, and only here, on a message's first frame. */
            if (ev.header.rsv & CWS_RSV1) c->flags |= CWS_CF_ZMSG;
            else c->flags &= (uint16_t)~CWS_CF_ZMSG;
        }
        if (c->flags & CWS_CF_ZMSG) {
            if (cws_conn_zinput(l, c, op, &ev) < 0) return;
            continue;
        }
        if (op == CWS_OP_TEXT && ev.payload_len &&
            cws_utf8_feed(&c->utf8, ev.payload, ev.payload_len, NULL) != CWS_UTF8_VALID) {
            cws_conn_fail(l, c, CWS_CLOSE_INVALID_PAYLOAD);
            return;
        }
        int last = ev.frame_end && ev.header.fin;
        if (last && op == CWS_OP_TEXT && cws_utf8_finish(&c->utf8) != CWS_UTF8_VALID) {
            cws_conn_fail(l, c, CWS_CLOSE_INVALID_PAYLOAD);
            return;
        }
        if (ev.message_start && ev.frame_start && last) {
            /* The whole message is in this buffer: deliver it in place. */
            cws_conn_deliver(l, c, op, ev.payload, ev.payload_len);
            continue;
        }
        if (ev.frame_start) {
            if ((uint64_t)c->rlen + ev.header.payload_len > cfg->max_message_size) {
                cws_conn_fail(l, c, CWS_CLOSE_MESSAGE_TOO_BIG);
                return;
            }
            /* Reserve the whole frame at once: one allocation per frame. */
            if (cws_rbuf_reserve(c, ev.header.payload_len) < 0) {
                cws_conn_fail(l, c, CWS_CLOSE_MESSAGE_TOO_BIG);
                return;
            }
        }
        if (ev.payload_len) {
            memcpy(c->rbuf + c->rlen, ev.payload, ev.payload_len);
            c->rlen += (uint32_t)ev.payload_len;
        }
        if (last) {
            cws_conn_deliver(l, c, op, c->rbuf, c->rlen);
            /* Free the reassembly buffer: idle connections stay small. */
            free(c->rbuf);
            c->rbuf = NULL;
            c->rlen = c->rcap = 0;
        }
    }
}

/* ---- input: the request head -------------------------------------------- */

struct cws_request {
    cws_loop *loop;
    cws_conn *conn;
    const cws_upgrade_info *upgrade;
    int answered;      /* respond or accept was called */
    int accepted;
    char remote[64];
};

static void cws_conn_open(cws_loop *l, cws_conn *c) {
    c->flags |= CWS_CF_OPENED;
    CWS_STAT_ADD(l, connections, 1);
    const cws_server_config *cfg = &l->srv->cfg;
    c->active_tick = l->tick;
    if (cfg->idle_timeout_ms) cws_timer_set(l, c, cfg->idle_timeout_ms);
    else cws_timer_clear(l, c);
    const cws_callbacks *cb = &cfg->callbacks;
    if (cb->on_open) cb->on_open(cb->ctx, cws_conn_id_of(l, c), c->user);
}

/* Handles the complete head just parsed into l->http; returns 1 if the
 * connection is now open. */
static int cws_conn_request(cws_loop *l, cws_conn *c) {
    cws_http_request *r = &l->http;
    cws_upgrade_info info;
    const cws_upgrade_info *up = NULL;
    if (cws_http_is_upgrade(r)) {
        int status = cws_upgrade_validate(r, &info);
        if (status) {
            cws_conn_http_error(l, c, status);
            return 0;
        }
        up = &info;
    }
    cws_request req = {.loop = l, .conn = c, .upgrade = up};
    const cws_callbacks *cb = &l->srv->cfg.callbacks;
    if (cb->on_request) cb->on_request(cb->ctx, &req, r, up);
    if (!req.answered) {
        cws_conn_http_error(l, c, 404);
        return 0;
    }
    if (!req.accepted) return 0;
    cws_conn_open(l, c);
    return c->state == CWS_CONN_OPEN || c->state == CWS_CONN_CLOSING;
}

static void cws_conn_handshake_input(cws_loop *l, cws_conn *c, uint8_t *data, size_t len) {
    uint32_t max_head = l->srv->cfg.max_head_size;
    const uint8_t *head;
    size_t have, taken;
    if (!c->rlen) {
        /* Common case: the whole head came in one read; parse it in place. */
        head = data;
        have = len;
        taken = len;
    } else {
        size_t room = max_head > c->rlen ? max_head - c->rlen : 0;
        taken = len < room ? len : room;
        if (cws_rbuf_reserve(c, taken) < 0) {
            cws_conn_finish(l, c);
            return;
        }
        memcpy(c->rbuf + c->rlen, data, taken);
        c->rlen += (uint32_t)taken;
        head = c->rbuf;
        have = c->rlen;
    }
    cws_http_request *r = &l->http;
    cws_http_request_init(r, max_head);
    long rc = cws_http_parse(r, head, have);
    if (rc == 0) {
        if (head == data) {
            if (cws_rbuf_reserve(c, len) < 0) {
                cws_conn_finish(l, c);
                return;
            }
            memcpy(c->rbuf, data, len);
            c->rlen = (uint32_t)len;
        }
        return;
    }
    if (rc < 0) {
        cws_conn_http_error(l, c, (int)-rc);
        return;
    }
    /* Bytes after the head (a client that did not wait for the 101). The
     * head buffer is detached first: rbuf becomes the reassembly buffer. */
    size_t head_len = (size_t)rc;
    uint8_t *held = c->rbuf;
    c->rbuf = NULL;
    c->rlen = c->rcap = 0;
    int open = cws_conn_request(l, c);
    if (open && head_len < have) cws_conn_frames(l, c, (uint8_t *)head + head_len, have - head_len);
    if (open && taken < len && c->state != CWS_CONN_DEAD) cws_conn_frames(l, c, data + taken, len - taken);
    free(held);
}

void cws_conn_input(cws_loop *l, cws_conn *c, uint8_t *data, size_t len) {
    c->active_tick = l->tick;
    c->flags &= (uint16_t)~CWS_CF_PING_SENT;
    switch (c->state) {
    case CWS_CONN_HANDSHAKE:
        cws_conn_handshake_input(l, c, data, len);
        break;
    case CWS_CONN_OPEN:
    case CWS_CONN_CLOSING:
        cws_conn_frames(l, c, data, len);
        break;
    default:
        break; /* draining: discard */
    }
}

void cws_conn_eof(cws_loop *l, cws_conn *c, int err) {
    (void)err;
    cws_conn_finish(l, c);
}

/* ---- accept and timers ------------------------------------------------------ */

void cws_loop_accepted(cws_loop *l, int fd) {
    uint32_t slot;
    cws_conn *c = calloc(1, sizeof *c);
    if (!c || l->stopping || cws_slot_alloc(l, &slot) < 0) {
        free(c);
        close(fd);
        return;
    }
    CWS_STAT_ADD(l, accepted, 1);
    cws_slot *s = cws_slot_at(l, slot);
    c->fd = fd;
    c->slot = slot;
    c->gen = atomic_load_explicit(&s->gen, memory_order_relaxed);
    c->state = CWS_CONN_HANDSHAKE;
    s->conn = c;
    l->live++;
    cws_timer_set(l, c, l->srv->cfg.handshake_timeout_ms);
    if (l->srv->ops->conn_start(l, c) < 0) cws_conn_finish(l, c);
}

static void cws_conn_timeout(cws_loop *l, cws_conn *c) {
    const cws_server_config *cfg = &l->srv->cfg;
    if (c->state != CWS_CONN_OPEN) {
        /* Handshake, close or drain took too long. */
        cws_conn_finish(l, c);
        return;
    }
    uint32_t idle_ticks = (cfg->idle_timeout_ms + l->srv->tick_ms - 1) / l->srv->tick_ms;
    uint32_t quiet = l->tick - c->active_tick;
    if (c->flags & CWS_CF_PING_SENT) {
        /* No traffic since our ping: the peer is gone. */
        c->close_code = CWS_CLOSE_ABNORMAL;
        cws_conn_finish(l, c);
        return;
    }
    if (quiet < idle_ticks) {
        cws_timer_set(l, c, (idle_ticks - quiet) * l->srv->tick_ms);
        return;
    }
    /* Idle: free what an idle connection does not need, and ping. */
    if (!c->qcount && c->q) {
        free(c->q);
        c->q = NULL;
        c->qcap = c->qhead = 0;
    }
    cws_msg *m = cws_msg_frame(CWS_OP_PING, NULL, 0);
    if (!m || cws_sendq_push(l, c, m) < 0) {
        cws_msg_release(m);
        cws_conn_finish(l, c);
        return;
    }
    cws_msg_release(m);
    c->flags |= CWS_CF_PING_SENT;
    cws_timer_set(l, c, cfg->pong_timeout_ms);
}

/* ---- the loop's turn and the inbox ---------------------------------------- */

static void cws_loop_begin_stop(cws_loop *l) {
    l->stopping = 1;
    l->srv->ops->stop_accept(l);
    for (uint32_t i = 0; i < l->nslots; i++) {
        cws_conn *c = cws_slot_at(l, i)->conn;
        if (!c) continue;
        if (c->state == CWS_CONN_HANDSHAKE || c->state == CWS_CONN_DRAINING) cws_conn_finish(l, c);
        else if (c->state == CWS_CONN_OPEN) {
            c->close_code = CWS_CLOSE_GOING_AWAY;
            cws_conn_close_with(l, c, CWS_CLOSE_GOING_AWAY, 0);
        }
    }
}

static void cws_loop_force_close(cws_loop *l) {
    for (uint32_t i = 0; i < l->nslots; i++) {
        cws_conn *c = cws_slot_at(l, i)->conn;
        if (c && c->state != CWS_CONN_DEAD) cws_conn_finish(l, c);
    }
}

void cws_loop_drain_inbox(cws_loop *l) {
    atomic_store_explicit(&l->wake_pending, 0, memory_order_relaxed);
    /* Swap the vectors under the lock; work through them without it. */
    pthread_mutex_lock(&l->inbox_lock);
    cws_cmd *cmds = l->inbox;
    uint32_t n = l->ninbox, cap = l->inbox_cap;
    l->inbox = l->inbox_spare;
    l->inbox_cap = l->spare_cap;
    l->ninbox = 0;
    pthread_mutex_unlock(&l->inbox_lock);
    for (uint32_t i = 0; i < n; i++) {
        cws_cmd *cmd = &cmds[i];
        cws_conn *c = cws_loop_conn(l, cmd->id);
        if (c) {
            if (cmd->close_code) cws_loop_close(l, c, cmd->msg, cmd->close_code);
            else cws_loop_send(l, c, cmd->msg);
        }
        cws_msg_release(cmd->msg);
    }
    l->inbox_spare = cmds;
    l->spare_cap = cap;
    if (atomic_load_explicit(&l->srv->stopping, memory_order_acquire) && !l->stopping) cws_loop_begin_stop(l);
}

int cws_loop_turn(cws_loop *l) {
    cws_server *s = l->srv;
    l->now_ms = cws_monotonic_ms() - l->start_ms;
    cws_timer_advance(l, cws_conn_timeout);
    if (l->stopping && cws_monotonic_ms() >= s->stop_deadline_ms) cws_loop_force_close(l);
    /* Flush every connection that got output this turn: one write each, with
     * everything queued for it. */
    for (uint32_t i = 0; i < l->ndirty; i++) {
        cws_conn *c = cws_loop_conn(l, l->dirty[i]);
        if (!c) continue;
        c->flags &= (uint16_t)~CWS_CF_DIRTY;
        if (c->qcount && !(c->flags & CWS_CF_WANT_WRITE)) s->ops->conn_flush(l, c);
    }
    l->ndirty = 0;
    cws_loop_bury(l);
    uint64_t next = ((uint64_t)l->tick + 1) * s->tick_ms;
    uint64_t now = cws_monotonic_ms() - l->start_ms;
    return next > now ? (int)(next - now) : 0;
}

int cws_loop_done(const cws_loop *l) { return l->stopping && l->live == 0; }

void *cws_loop_thread(void *arg) {
    cws_loop *l = arg;
    cws_current_loop = l;
    l->srv->ops->loop_run(l);
    cws_current_loop = NULL;
    return NULL;
}

/* ---- cross-thread commands ------------------------------------------------ */

void cws_loop_wake(cws_loop *l) {
    /* One eventfd write per burst: the loop clears the flag before draining. */
    if (atomic_exchange_explicit(&l->wake_pending, 1, memory_order_acq_rel)) return;
    uint64_t one = 1;
    while (write(l->wake_fd, &one, sizeof one) < 0 && errno == EINTR) {
    }
}

static int cws_inbox_reserve(cws_loop *l, uint32_t extra) {
    if (l->ninbox + extra <= l->inbox_cap) return 0;
    uint32_t cap = l->inbox_cap ? l->inbox_cap : 64;
    while (cap < l->ninbox + extra) cap *= 2;
    cws_cmd *n = realloc(l->inbox, cap * sizeof *n);
    if (!n) return -ENOMEM;
    l->inbox = n;
    l->inbox_cap = cap;
    return 0;
}

static int cws_post(cws_loop *l, cws_conn_id id, cws_msg *m, uint16_t close_code) {
    pthread_mutex_lock(&l->inbox_lock);
    int rc = cws_inbox_reserve(l, 1);
    if (rc == 0) {
        cws_msg_retain(m);
        l->inbox[l->ninbox++] = (cws_cmd){id, m, close_code};
    }
    pthread_mutex_unlock(&l->inbox_lock);
    if (rc == 0) cws_loop_wake(l);
    return rc;
}

int cws_send_msg(cws_server *s, cws_conn_id id, cws_msg *m) {
    cws_loop *l;
    if (!m || cws_id_check(s, id, &l) < 0) return -ENOENT;
    if (cws_current_loop == l) {
        cws_conn *c = cws_loop_conn(l, id);
        return c ? cws_loop_send(l, c, m) : -ENOENT;
    }
    return cws_post(l, id, m, 0);
}

int cws_send(cws_server *s, cws_conn_id id, uint8_t opcode, const void *data, size_t len) {
    cws_loop *l;
    if (cws_id_check(s, id, &l) < 0) return -ENOENT;
    cws_msg *m = cws_msg_frame(opcode, data, len);
    if (!m) return -ENOMEM;
    int rc = cws_send_msg(s, id, m);
    cws_msg_release(m);
    return rc;
}

void cws_send_msg_many(cws_server *s, const cws_conn_id *ids, size_t count, cws_msg *m) {
    if (!s || !m) return;
    /* Group by loop: one lock and one wake-up per loop. Recipients on this
     * thread's own loop are queued directly. */
    for (uint32_t li = 0; li < s->nloops; li++) {
        cws_loop *l = &s->loops[li];
        if (cws_current_loop == l) {
            for (size_t i = 0; i < count; i++) {
                if (cws_id_loop(ids[i]) != li) continue;
                cws_conn *c = cws_loop_conn(l, ids[i]);
                if (c) cws_loop_send(l, c, m);
            }
            continue;
        }
        uint32_t posted = 0;
        int locked = 0;
        for (size_t i = 0; i < count; i++) {
            if (cws_id_loop(ids[i]) != li) continue;
            if (!locked) {
                pthread_mutex_lock(&l->inbox_lock);
                locked = 1;
            }
            if (cws_inbox_reserve(l, 1) < 0) break;
            cws_msg_retain(m);
            l->inbox[l->ninbox++] = (cws_cmd){ids[i], m, 0};
            posted++;
        }
        if (locked) pthread_mutex_unlock(&l->inbox_lock);
        if (posted) cws_loop_wake(l);
    }
}

int cws_close(cws_server *s, cws_conn_id id, uint16_t code, const void *reason, size_t reason_len) {
    cws_loop *l;
    if (cws_id_check(s, id, &l) < 0) return -ENOENT;
    if (!cws_close_code_valid(code)) code = CWS_CLOSE_NORMAL;
    uint8_t payload[125];
    size_t n = cws_close_payload_encode(payload, code, reason, reason ? reason_len : 0);
    cws_msg *m = cws_msg_frame(CWS_OP_CLOSE, payload, n);
    if (!m) return -ENOMEM;
    int rc = 0;
    if (cws_current_loop == l) {
        cws_conn *c = cws_loop_conn(l, id);
        if (c) cws_loop_close(l, c, m, code);
        else rc = -ENOENT;
    } else {
        rc = cws_post(l, id, m, code);
    }
    cws_msg_release(m);
    return rc;
}

/* ---- requests ----------------------------------------------------------- */

static const char *cws_status_text(int status) {
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
    }
}

void cws_request_respond(cws_request *req, int status, const char *content_type,
                         const char *headers, const void *body, size_t body_len) {
    if (!req || req->answered) return;
    req->answered = 1;
    if (status < 100 || status > 999) status = 500;
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\n%s%s%sContent-Length: %zu\r\nConnection: close\r\n",
                     status, cws_status_text(status), content_type ? "Content-Type: " : "",
                     content_type ? content_type : "", content_type ? "\r\n" : "", body_len);
    if (n < 0 || (size_t)n >= sizeof head) n = 0;
    size_t hl = headers ? strlen(headers) : 0;
    size_t total = (size_t)n + hl + 2 + body_len;
    cws_msg *m = cws_msg_alloc(total);
    if (!m) {
        cws_conn_finish(req->loop, req->conn);
        return;
    }
    uint8_t *o = m->data;
    memcpy(o, head, (size_t)n);
    o += n;
    if (hl) memcpy(o, headers, hl), o += hl;
    memcpy(o, "\r\n", 2), o += 2;
    if (body_len) memcpy(o, body, body_len);
    cws_conn *c = req->conn;
    c->state = CWS_CONN_CLOSING;
    c->flags |= CWS_CF_SHUT_AFTER | CWS_CF_READ_DONE | CWS_CF_CLOSE_SENT;
    if (cws_sendq_push(req->loop, c, m) < 0) cws_conn_finish(req->loop, c);
    else cws_timer_set(req->loop, c, req->loop->srv->cfg.close_timeout_ms);
    cws_msg_release(m);
}

cws_conn_id cws_request_accept(cws_request *req, const char *protocol, void *user) {
    if (!req || req->answered || !req->upgrade) return 0;
    cws_loop *l = req->loop;
    cws_conn *c = req->conn;
    char ext[CWS_DEFLATE_RESPONSE_MAX];
    cws_deflate_params dp;
    int el = cws_deflate_negotiate_request(&l->srv->cfg.deflate, &l->http, &dp, ext, sizeof ext);
    if (el < 0) el = 0;
    size_t cap = 256 + (protocol ? strlen(protocol) : 0) + (size_t)el;
    cws_msg *m = cws_msg_alloc(cap);
    if (!m) return 0;
    m->len = cws_upgrade_response(m->data, cap, req->upgrade->key.ptr, req->upgrade->key.len, protocol,
                                  el > 0 ? ext : NULL);
    if (!m->len || cws_sendq_push(l, c, m) < 0) {
        cws_msg_release(m);
        return 0;
    }
    cws_msg_release(m);
    req->answered = 1;
    req->accepted = 1;
    c->user = user;
    c->state = CWS_CONN_OPEN;
    cws_parser_init(&c->parser, CWS_ROLE_SERVER, l->srv->cfg.max_message_size);
    if (el > 0) {
        c->pmd = (uint8_t)(CWS_PMD_ON | (dp.server_no_context_takeover ? CWS_PMD_SERVER_NCT : 0) |
                           (dp.client_no_context_takeover ? CWS_PMD_CLIENT_NCT : 0));
        c->z_sbits = dp.server_max_window_bits;
        c->z_cbits = dp.client_max_window_bits;
        c->parser.rsv_allowed = CWS_RSV1;
    }
    return cws_conn_id_of(l, c);
}

const char *cws_request_remote(const cws_request *creq) {
    cws_request *req = (cws_request *)creq;
    if (req->remote[0]) return req->remote;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char ip[INET6_ADDRSTRLEN];
    if (getpeername(req->conn->fd, (struct sockaddr *)&ss, &sl) < 0) return "";
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        snprintf(req->remote, sizeof req->remote, "%s:%u", ip, ntohs(a->sin_port));
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        snprintf(req->remote, sizeof req->remote, "[%s]:%u", ip, ntohs(a->sin6_port));
    }
    return req->remote;
}
