/*
 * Closing: the close handshake, failing a connection, reporting on_close, and
 * freeing connections at the end of the loop's turn (never inside a user
 * callback, so a callback can send or close without the connection
 * disappearing under the frame parser).
 */
#include "engine_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- closing ------------------------------------------------------------- */

/* The WebSocket is over (the TCP connection may linger a little): make the
 * id stale and call on_close if it is owed. */
void cws_conn_report(cws_loop *l, cws_conn *c) {
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
            cb->on_close(cb->ctx, cws_conn_id_of(l, c), c->user, code, c->cold ? c->cold->reason : NULL,
                         c->reason_len);
    }
    if (c->cold) {
        free(c->cold->reason);
        c->cold->reason = NULL;
    }
}

void cws_conn_finish(cws_loop *l, cws_conn *c) {
    if (c->state == CWS_CONN_DEAD) return;
    if (c->state == CWS_CONN_DEFERRED && cws_deferred_end(l, c)) return;
    c->state = CWS_CONN_DEAD;
    cws_timer_clear(l, c);
    cws_conn_report(l, c);
    cws_rbuf_free(c);
    cws_conn_zfree(l, c);
    /* The cold record itself stays until the connection is freed: code up
     * the stack may still hold it. */
    if (c->cold) {
        free(c->cold->ctrl);
        c->cold->ctrl = NULL;
    }
    l->srv->ops->conn_close(l, c);
}

/* Freed at the end of the turn, not now: callers up the stack (the frame
 * loop, the event batch) may still look at c->state, which says DEAD. */
void cws_conn_release(cws_loop *l, cws_conn *c) {
    c->timer_next = l->graveyard;
    l->graveyard = c;
}

uint32_t cws_loop_bury(cws_loop *l) {
    uint32_t n = 0;
    while (l->graveyard) {
        n++;
        cws_conn *c = l->graveyard;
        l->graveyard = c->timer_next;
        cws_sendq_clear(c);
        cws_sendq_free_ring(l, c);
        cws_tls_conn_free(c);
        free(c->cold);
        cws_slot_at(l, c->slot)->conn = NULL;
        cws_slot_free(l, c->slot);
        l->live--;
        CWS_STAT_ADD(l, sockets, (uint64_t)-1);
        free(c);
    }
    return n;
}


/* Queues a close frame. shut_after: close our side once it is written
 * (answering the peer's close, or failing) instead of waiting for the reply. */
void cws_conn_send_close(cws_loop *l, cws_conn *c, cws_msg *frame, int shut_after) {
    if (c->flags & CWS_CF_CLOSE_SENT) return;
    c->flags |= CWS_CF_CLOSE_SENT;
    c->state = CWS_CONN_CLOSING;
    if (shut_after) c->flags |= CWS_CF_SHUT_AFTER;
    /* The peer's close frame (or its FIN) must be read for the handshake to end. */
    cws_conn_force_reading(l, c);
    if (cws_sendq_push(l, c, frame) < 0) {
        cws_conn_finish(l, c);
        return;
    }
    cws_timer_set(l, c, l->srv->cfg.close_timeout_ms);
}

void cws_conn_close_with(cws_loop *l, cws_conn *c, uint16_t code, int shut_after) {
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
void cws_conn_fail(cws_loop *l, cws_conn *c, uint16_t code) {
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
