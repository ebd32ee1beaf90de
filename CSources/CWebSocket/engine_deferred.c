/*
 * Deferred upgrades: on_request answers "later" (cws_request_defer) and the
 * application answers from any thread once its decision is made.
 *
 * Who answers is decided by one compare-and-swap on the slot's deferred_gen:
 * the application's thread (cws_deferred_accept / _respond) or the loop (the
 * handshake timeout, a stop, the peer leaving). Whoever loses knows at once:
 * a late application gets -ENOENT and keeps its user; a loop that lost waits
 * for the answer, which is already on its way to the inbox, so an accepted
 * user is never dropped.
 */
#include "engine_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* What the 101 needs from the request head, which lives in the loop's
 * scratch and is gone once on_request returns. */
typedef struct cws_deferred {
    cws_deflate_params dp;
    char ext[CWS_DEFLATE_RESPONSE_MAX]; /* permessage-deflate response; "" when not negotiated */
    char key[64];                       /* Sec-WebSocket-Key (it decodes to 16 bytes: 24 chars) */
    uint8_t key_len;
    uint8_t ending;                     /* the connection ended while the answer was on its way */
    uint32_t input_len, input_cap;      /* what the client sent after the head, in order */
    uint8_t *input;
} cws_deferred;

/* What an accept command's msg carries. */
typedef struct cws_deferred_accept_args {
    void *user;
    char protocol[]; /* "" for none */
} cws_deferred_accept_args;

static int cws_deferred_claim(cws_slot *slot, uint32_t gen) {
    uint32_t want = gen;
    return atomic_compare_exchange_strong_explicit(&slot->deferred_gen, &want, 0, memory_order_acq_rel,
                                                   memory_order_acquire);
}

static int cws_deferred_keep(cws_deferred *d, const uint8_t *data, size_t len) {
    if (!len) return 0;
    uint64_t need = (uint64_t)d->input_len + len;
    if (need > d->input_cap) {
        if (need > UINT32_MAX) return -1;
        uint64_t cap = d->input_cap ? d->input_cap : 256;
        while (cap < need) cap *= 2;
        uint8_t *n = realloc(d->input, (size_t)cap);
        if (!n) return -1;
        d->input = n;
        d->input_cap = (uint32_t)cap;
    }
    memcpy(d->input + d->input_len, data, len);
    d->input_len += (uint32_t)len;
    return 0;
}

cws_conn_id cws_request_defer(cws_request *req) {
    if (!req || req->answered || !req->upgrade) return 0;
    cws_loop *l = req->loop;
    cws_conn *c = req->conn;
    cws_slice key = req->upgrade->key;
    cws_deferred *d = calloc(1, sizeof *d);
    if (!d || key.len > sizeof d->key || cws_deferred_keep(d, req->rest[0], req->rest_len[0]) < 0 ||
        cws_deferred_keep(d, req->rest[1], req->rest_len[1]) < 0) {
        if (d) free(d->input);
        free(d);
        return 0;
    }
    memcpy(d->key, key.ptr, key.len);
    d->key_len = (uint8_t)key.len;
    if (cws_deflate_negotiate_request(&l->srv->cfg.deflate, &l->http, &d->dp, d->ext, sizeof d->ext) <= 0)
        d->ext[0] = 0;
    req->answered = 1;
    req->deferred = 1;
    c->state = CWS_CONN_DEFERRED;
    c->deferred = d;
    CWS_STAT_ADD(l, deferred, 1);
    atomic_store_explicit(&cws_slot_at(l, c->slot)->deferred_gen, c->gen, memory_order_release);
    cws_conn_apply_reading(l, c); /* stop reading: the rest waits for the answer */
    return cws_conn_id_of(l, c);
}

/* Takes the record off c, which is then an ordinary handshaking connection
 * (so finishing it or answering it takes the usual paths). */
static cws_deferred *cws_deferred_take(cws_loop *l, cws_conn *c) {
    cws_deferred *d = c->deferred;
    c->deferred = NULL;
    c->state = CWS_CONN_HANDSHAKE;
    CWS_STAT_ADD(l, deferred, (uint64_t)-1);
    return d;
}

static void cws_deferred_free(cws_deferred *d) {
    free(d->input);
    free(d);
}

void cws_deferred_input(cws_loop *l, cws_conn *c, const uint8_t *data, size_t len) {
    /* Only a read that was already under way when reading stopped (epoll
     * reads a hung-up socket's last bytes): bounded like any message. */
    cws_deferred *d = c->deferred;
    if ((uint64_t)d->input_len + len > l->srv->cfg.max_message_size + CWS_RECV_BUF_SIZE ||
        cws_deferred_keep(d, data, len) < 0)
        cws_conn_finish(l, c);
}

void cws_deferred_refuse(cws_loop *l, cws_conn *c) {
    if (!cws_deferred_claim(cws_slot_at(l, c->slot), c->gen)) {
        /* The application's answer won and is on its way: look again in a
         * tick, in case its inbox refused it (the claim is then handed back). */
        cws_timer_set(l, c, l->srv->tick_ms);
        return;
    }
    cws_deferred_free(cws_deferred_take(l, c));
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n"
                               "Connection: close\r\nContent-Length: 0\r\n\r\n";
    cws_conn_answer(l, c, busy, sizeof busy - 1);
    if (c->state != CWS_CONN_DEAD) cws_conn_apply_reading(l, c); /* read to the peer's FIN */
}

int cws_deferred_end(cws_loop *l, cws_conn *c) {
    /* A dead loop refuses commands from now on; those already in its inbox
     * find the connection gone and give their user back (see below). */
    if (!cws_deferred_claim(cws_slot_at(l, c->slot), c->gen) && !l->dead) {
        c->deferred->ending = 1;
        return 1;
    }
    cws_deferred_free(cws_deferred_take(l, c));
    return 0;
}

/* The engine took user but has no connection to open for it: the callbacks
 * that give every accepted user back still come, back to back. */
static void cws_deferred_orphan(cws_loop *l, cws_conn_id id, void *user) {
    const cws_callbacks *cb = &l->srv->cfg.callbacks;
    if (cb->on_open) cb->on_open(cb->ctx, id, user);
    if (cb->on_close) cb->on_close(cb->ctx, id, user, CWS_CLOSE_ABNORMAL, NULL, 0);
}

void cws_deferred_command(cws_loop *l, cws_conn *c, const cws_cmd *cmd) {
    int accept = cmd->reading == CWS_CMD_DEFERRED_ACCEPT;
    const cws_deferred_accept_args *args = accept ? (const cws_deferred_accept_args *)cmd->msg->data : NULL;
    if (!c || c->state != CWS_CONN_DEFERRED) {
        if (accept) cws_deferred_orphan(l, cmd->id, args->user);
        return;
    }
    cws_deferred *d = cws_deferred_take(l, c);
    int ending = d->ending;
    if (!accept) {
        cws_conn_answer_msg(l, c, cmd->msg);
    } else if (cws_conn_upgrade(l, c, d->key, d->key_len, args->protocol[0] ? args->protocol : NULL, d->ext,
                                &d->dp, args->user) < 0) {
        cws_conn_finish(l, c);
        cws_deferred_orphan(l, cmd->id, args->user);
    } else {
        cws_conn_open(l, c);
        /* What the client sent without waiting for the 101 comes first; the
         * kernel's share is read once reading resumes (apply_reading). */
        if (d->input_len && (c->state == CWS_CONN_OPEN || c->state == CWS_CONN_CLOSING))
            cws_conn_frames(l, c, d->input, d->input_len);
        if (c->state == CWS_CONN_OPEN && l->stopping && !ending) {
            /* The stop went by while the answer was on its way. */
            c->close_code = CWS_CLOSE_GOING_AWAY;
            cws_conn_close_with(l, c, CWS_CLOSE_GOING_AWAY, 0);
        }
    }
    cws_deferred_free(d);
    if (c->state == CWS_CONN_DEAD) return;
    if (ending) {
        if (!c->close_code) c->close_code = CWS_CLOSE_ABNORMAL;
        cws_conn_finish(l, c);
        return;
    }
    cws_conn_apply_reading(l, c);
}

/* Any thread: claim the answer, then hand it to the loop. */
static int cws_deferred_post(cws_server *s, cws_conn_id id, cws_msg *m, uint8_t kind) {
    cws_loop *l;
    if (cws_id_check(s, id, &l) < 0) return -ENOENT;
    cws_slot *slot = cws_slot_at(l, cws_id_slot(id));
    if (!slot || !cws_deferred_claim(slot, cws_id_gen(id))) return -ENOENT;
    int rc = cws_loop_post(l, (cws_cmd){.id = id, .msg = m, .reading = kind});
    if (rc < 0) {
        /* Not delivered: the claim goes back, so the timeout can still answer. */
        uint32_t none = 0;
        atomic_compare_exchange_strong_explicit(&slot->deferred_gen, &none, cws_id_gen(id), memory_order_acq_rel,
                                                memory_order_relaxed);
    }
    return rc;
}

int cws_deferred_accept(cws_server *s, cws_conn_id id, const char *protocol, void *user) {
    cws_loop *l;
    if (cws_id_check(s, id, &l) < 0) return -ENOENT;
    size_t pl = protocol ? strlen(protocol) : 0;
    cws_msg *m = cws_msg_alloc(sizeof(cws_deferred_accept_args) + pl + 1);
    if (!m) return -ENOMEM;
    cws_deferred_accept_args *args = (cws_deferred_accept_args *)m->data;
    args->user = user;
    if (pl) memcpy(args->protocol, protocol, pl);
    args->protocol[pl] = 0;
    int rc = cws_deferred_post(s, id, m, CWS_CMD_DEFERRED_ACCEPT);
    cws_msg_release(m);
    return rc;
}

int cws_deferred_respond(cws_server *s, cws_conn_id id, int status, const char *content_type, const char *headers,
                         const void *body, size_t body_len) {
    cws_loop *l;
    if (cws_id_check(s, id, &l) < 0) return -ENOENT;
    /* Deferred requests are upgrades, GETs: the body goes out. */
    cws_msg *m = cws_http_response_msg(status, content_type, headers, body, body_len, 0);
    if (!m) return -ENOMEM;
    int rc = cws_deferred_post(s, id, m, CWS_CMD_DEFERRED_RESPOND);
    cws_msg_release(m);
    return rc;
}
