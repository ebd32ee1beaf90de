/*
 * Sending: on the owning loop (the send-queue policy), and from any thread
 * through the loop's inbox and its eventfd wake-up.
 */
#include "engine_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- sending on the owning loop ------------------------------------------ */

static int cws_conn_can_send(const cws_conn *c) {
    return c->state == CWS_CONN_OPEN && !(c->flags & CWS_CF_CLOSE_SENT);
}

/* Loop thread: queue a data message under the send-queue policy. */

int cws_loop_send(cws_loop *l, cws_conn *c, cws_msg *m) {
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

int cws_loop_send_frame(cws_loop *l, cws_conn *c, cws_msg *m) {
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
void cws_loop_close(cws_loop *l, cws_conn *c, cws_msg *frame, uint16_t code) {
    if (c->state != CWS_CONN_OPEN) return;
    if (!c->close_code) c->close_code = code;
    cws_conn_send_close(l, c, frame, 0);
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

int cws_loop_post(cws_loop *l, cws_cmd cmd) {
    pthread_mutex_lock(&l->inbox_lock);
    int rc = l->dead ? -ENOENT : cws_inbox_reserve(l, 1);
    if (rc == 0) {
        if (cmd.msg) cws_msg_retain(cmd.msg);
        l->inbox[l->ninbox++] = cmd;
        l->inbox_bytes += sizeof cmd + (cmd.msg ? cmd.msg->len : 0);
    }
    pthread_mutex_unlock(&l->inbox_lock);
    if (rc == 0) cws_loop_wake(l);
    return rc;
}

/* Whether an inbox holding what it does takes `bytes` more (under
 * inbox_lock). An empty one takes anything, so a message larger than the cap
 * can still be sent. Only data messages are held to it: closes and reading
 * commands are small, and refusing one would lose a close or leave a
 * connection paused. */
static int cws_inbox_has_room(const cws_loop *l, uint64_t bytes) {
    return !l->ninbox || l->inbox_bytes + bytes <= l->srv->cfg.max_inbox_bytes;
}

/* posted is written only under its loop's inbox_lock: a load and a store,
 * not a locked add (a fan-out does this once per recipient). */
static void cws_slot_count_posted(cws_slot *slot, uint64_t len) {
    atomic_store_explicit(&slot->posted, atomic_load_explicit(&slot->posted, memory_order_relaxed) + len,
                          memory_order_relaxed);
}

/* A data message for a connection of another thread's loop: held to
 * max_inbox_bytes, and counted as posted to its slot (cws_buffered_amount)
 * before the loop can take it. */
static int cws_post_send(cws_loop *l, cws_conn_id id, cws_msg *m) {
    uint64_t bytes = sizeof(cws_cmd) + m->len;
    cws_slot *slot = cws_slot_at(l, cws_id_slot(id));
    pthread_mutex_lock(&l->inbox_lock);
    int rc = l->dead ? -ENOENT : !cws_inbox_has_room(l, bytes) ? -EAGAIN : cws_inbox_reserve(l, 1);
    if (rc == 0) {
        cws_msg_retain(m);
        l->inbox[l->ninbox++] = (cws_cmd){.id = id, .msg = m};
        l->inbox_bytes += bytes;
        cws_slot_count_posted(slot, m->len);
    }
    pthread_mutex_unlock(&l->inbox_lock);
    if (rc == 0) cws_loop_wake(l);
    else if (rc == -EAGAIN) atomic_fetch_add_explicit(&l->stats.inbox_refused, 1, memory_order_relaxed); /* any thread */
    return rc;
}

/* On a connection's own loop thread a send goes straight to its queue,
 * unless sends from other threads still wait for it in the inbox: then it
 * waits behind them. So two sends the application ordered (by a lock, or
 * one thread handing work to another) arrive in that order, whichever
 * threads made them; a channel's history relies on it at a join's seam.
 * (posted also counts what a slot's earlier connection was sent: such a
 * stale difference only sends this one through the inbox too.) */
static int cws_posts_waiting(cws_loop *l, cws_conn_id id) {
    cws_slot *slot = cws_slot_at(l, cws_id_slot(id));
    return slot && atomic_load_explicit(&slot->posted, memory_order_relaxed) !=
                       atomic_load_explicit(&slot->taken, memory_order_relaxed);
}

int cws_send_msg(cws_server *s, cws_conn_id id, cws_msg *m) {
    cws_loop *l;
    if (!m || cws_id_check(s, id, &l) < 0) return -ENOENT;
    if (cws_current_loop == l && !cws_posts_waiting(l, id)) {
        cws_conn *c = cws_loop_conn(l, id);
        return c ? cws_loop_send(l, c, m) : -ENOENT;
    }
    return cws_post_send(l, id, m);
}

int cws_send(cws_server *s, cws_conn_id id, uint8_t opcode, const void *data, size_t len) {
    cws_loop *l;
    if (cws_id_check(s, id, &l) < 0) return -ENOENT;
    /* The bytes on_message is handing over, sent on: their own block. */
    cws_msg *delivered = cws_delivered_frame(opcode, data, len);
    if (delivered) return cws_send_msg(s, id, delivered);
    cws_msg *m = cws_msg_frame(opcode, data, len);
    if (!m) return -ENOMEM;
    int rc = cws_send_msg(s, id, m);
    cws_msg_release(m);
    return rc;
}

/* A fan-out touches three cold cache lines per recipient, each found through
 * the one before: its slot, its connection, and the tail of its send queue.
 * Fetching them CWS_PREFETCH_AHEAD recipients early (the slot), then half as
 * early (the connection) and a quarter (the queue), overlaps those misses
 * instead of taking them one after another (at 10,000 subscribers the slot
 * and connection lookup alone was 9% of the server's CPU). */
#define CWS_PREFETCH_AHEAD 16

static void cws_prefetch_recipient(const cws_loop *l, uint32_t li, cws_conn_id id, int stage) {
    uint32_t slot = cws_id_slot(id);
    if (cws_id_loop(id) != li || slot >= l->nslots) return;
    cws_slot *sl = cws_slot_at(l, slot);
    if (!sl) return;
    if (stage == 0) {
        __builtin_prefetch(sl, 1);
        return;
    }
    cws_conn *c = sl->conn;
    if (!c) return;
    if (stage == 1) __builtin_prefetch(c, 1);
    else if (c->q) __builtin_prefetch(&c->q[(c->qhead + c->qcount) & (c->qcap - 1)], 1);
}

void cws_send_msg_many(cws_server *s, const cws_conn_id *ids, size_t count, cws_msg *m) {
    if (!s || !m) return;
    /* Group by loop: one lock and one wake-up per loop. Recipients on this
     * thread's own loop are queued directly. */
    for (uint32_t li = 0; li < s->nloops; li++) {
        cws_loop *l = &s->loops[li];
        if (cws_current_loop == l) {
            for (size_t i = 0; i < count; i++) {
                if (i + CWS_PREFETCH_AHEAD < count) cws_prefetch_recipient(l, li, ids[i + CWS_PREFETCH_AHEAD], 0);
                if (i + CWS_PREFETCH_AHEAD / 2 < count) cws_prefetch_recipient(l, li, ids[i + CWS_PREFETCH_AHEAD / 2], 1);
                if (i + CWS_PREFETCH_AHEAD / 4 < count) cws_prefetch_recipient(l, li, ids[i + CWS_PREFETCH_AHEAD / 4], 2);
                if (cws_id_loop(ids[i]) != li) continue;
                if (cws_posts_waiting(l, ids[i])) {
                    cws_post_send(l, ids[i], m);
                    continue;
                }
                cws_conn *c = cws_loop_conn(l, ids[i]);
                if (c) cws_loop_send(l, c, m);
            }
            continue;
        }
        uint32_t mine = 0;
        for (size_t i = 0; i < count; i++) mine += cws_id_loop(ids[i]) == li;
        if (!mine) continue;
        /* The message is shared: an inbox holds it once per post. */
        uint64_t bytes = (uint64_t)mine * sizeof(cws_cmd) + m->len;
        uint32_t posted = 0;
        pthread_mutex_lock(&l->inbox_lock);
        int rc = l->dead ? -ENOENT : !cws_inbox_has_room(l, bytes) ? -EAGAIN : cws_inbox_reserve(l, mine);
        for (size_t i = 0; rc == 0 && i < count; i++) {
            if (cws_id_loop(ids[i]) != li) continue;
            cws_slot *slot = cws_slot_at(l, cws_id_slot(ids[i]));
            if (!slot) continue; /* never a connection's id */
            cws_msg_retain(m);
            l->inbox[l->ninbox++] = (cws_cmd){.id = ids[i], .msg = m};
            cws_slot_count_posted(slot, m->len);
            posted++;
        }
        if (posted) l->inbox_bytes += (uint64_t)posted * sizeof(cws_cmd) + m->len;
        pthread_mutex_unlock(&l->inbox_lock);
        if (posted) cws_loop_wake(l);
        if (rc == -EAGAIN) atomic_fetch_add_explicit(&l->stats.inbox_refused, mine, memory_order_relaxed); /* any thread */
    }
}

/* ---- what waits for a connection ---------------------------------------- */

int64_t cws_buffered_amount(cws_server *s, cws_conn_id id) {
    cws_loop *l;
    if (cws_id_check(s, id, &l) < 0) return -ENOENT;
    cws_slot *slot = cws_slot_at(l, cws_id_slot(id));
    /* taken before posted: posted only grows and is never behind taken (a
     * command is posted before its loop can take it, and taken is stored with
     * release), so the later read of posted is at least this read of taken. */
    uint64_t taken = atomic_load_explicit(&slot->taken, memory_order_acquire);
    uint64_t posted = atomic_load_explicit(&slot->posted, memory_order_acquire);
    uint64_t queued = atomic_load_explicit(&slot->queued, memory_order_relaxed);
    uint64_t waiting = posted > taken ? posted - taken : 0;
    return (int64_t)(waiting + queued);
}

/* Loop thread: on_drain now if the queue is low enough, else once it is. */
void cws_conn_want_drain(cws_loop *l, cws_conn *c) {
    if (c->state != CWS_CONN_OPEN) return; /* on_close is coming instead */
    c->flags |= CWS_CF_WANT_DRAIN;
    cws_conn_queue_changed(l, c);
}

void cws_conn_queue_changed(cws_loop *l, cws_conn *c) {
    atomic_store_explicit(&c->slotp->queued, c->qbytes, memory_order_relaxed);
    if (!(c->flags & CWS_CF_WANT_DRAIN) || c->qbytes > l->srv->cfg.send_low_water) return;
    c->flags &= (uint16_t)~CWS_CF_WANT_DRAIN;
    if (c->state != CWS_CONN_OPEN) return;
    const cws_callbacks *cb = &l->srv->cfg.callbacks;
    if (cb->on_drain) cb->on_drain(cb->ctx, cws_conn_id_of(l, c), c->user);
}

int cws_request_drain(cws_server *s, cws_conn_id id) {
    cws_loop *l;
    if (cws_id_check(s, id, &l) < 0) return -ENOENT;
    if (cws_current_loop == l) {
        cws_conn *c = cws_loop_conn(l, id);
        if (!c) return -ENOENT;
        cws_conn_want_drain(l, c);
        return 0;
    }
    return cws_loop_post(l, (cws_cmd){.id = id, .reading = CWS_CMD_DRAIN});
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
    if (cws_current_loop == l && !cws_posts_waiting(l, id)) { /* else behind what waits, not before it */
        cws_conn *c = cws_loop_conn(l, id);
        if (c) cws_loop_close(l, c, m, code);
        else rc = -ENOENT;
    } else {
        rc = cws_loop_post(l, (cws_cmd){.id = id, .msg = m, .close_code = code});
    }
    cws_msg_release(m);
    return rc;
}
