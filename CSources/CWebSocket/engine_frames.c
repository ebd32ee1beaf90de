/*
 * Frame input: parsing, control frames, UTF-8, reassembly and delivery.
 */
#include "engine_internal.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- input: frames --------------------------------------------------------- */

void cws_conn_deliver(cws_loop *l, cws_conn *c, uint8_t opcode, const void *data, size_t len) {
    CWS_STAT_ADD(l, messages_in, 1);
    CWS_STAT_ADD(l, bytes_in, len);
    /* Once our close is out, the application has nothing to answer with. */
    if (c->flags & CWS_CF_CLOSE_SENT) return;
    const cws_callbacks *cb = &l->srv->cfg.callbacks;
    if (cb->on_message) cb->on_message(cb->ctx, cws_conn_id_of(l, c), c->user, opcode, data, len);
}

/*
 * A message of one frame that does not arrive in one read is gathered in a
 * pooled message block, with room in front for the server's own header for
 * that payload: an application that sends the delivered bytes back (an echo)
 * or on (a relay) gets this block queued as its frame, with no copy and no
 * allocation (cws_delivered_frame), where it used to cost a malloc'd
 * reassembly buffer (freed, and faulted in again, per message) and a second
 * copy into a new frame.
 */
static int cws_rmsg_start(cws_conn *c, uint64_t payload_len) {
    if (payload_len > UINT32_MAX) return -1;
    size_t h = cws_frame_header_size(payload_len, 0);
    cws_msg *m = cws_msg_alloc(h + (size_t)payload_len);
    if (!m) return -1;
    m->hdr_len = (uint8_t)h; /* the opcode stays CWS_MSG_RAW until a send frames it */
    c->rbuf = m->data + h;
    c->rlen = 0;
    c->rcap = (uint32_t)payload_len;
    c->flags |= CWS_CF_RMSG;
    return 0;
}

static cws_msg *cws_rmsg_of(const cws_conn *c) {
    size_t h = cws_frame_header_size(c->rcap, 0);
    return (cws_msg *)(void *)(c->rbuf - h - offsetof(cws_msg, data));
}

void cws_rbuf_free(cws_conn *c) {
    if (c->flags & CWS_CF_RMSG) cws_msg_release(cws_rmsg_of(c));
    else free(c->rbuf);
    c->flags &= (uint16_t)~CWS_CF_RMSG;
    c->rbuf = NULL;
    c->rlen = c->rcap = 0;
}

cws_msg *cws_delivered_frame(uint8_t opcode, const void *data, size_t len) {
    cws_loop *l = cws_current_loop;
    cws_msg *d = l ? l->delivering : NULL;
    if (!d || (opcode != CWS_OP_TEXT && opcode != CWS_OP_BINARY)) return NULL;
    if ((const uint8_t *)data != d->data + d->hdr_len || len != d->len - d->hdr_len) return NULL;
    if (d->opcode == CWS_MSG_RAW) {
        /* Only this loop's thread has the block until it is queued. */
        cws_frame_header_encode(d->data, 1, 0, opcode, len, 0, 0);
        d->opcode = opcode;
    }
    if (d->opcode != opcode) return NULL; /* framed as the other opcode already: a copy */
    CWS_STAT_ADD(l, in_place_sends, 1);
    return d;
}

int cws_rbuf_reserve(cws_conn *c, uint64_t extra) {
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
        uint32_t limit = l->srv->cfg.max_pings_per_second, now = (uint32_t)l->now_ms;
        if (limit != UINT32_MAX) {
            if (now - c->ping_window_ms >= 1000) {
                c->ping_window_ms = now;
                c->pings = 0;
            }
            if (++c->pings > limit) {
                CWS_STAT_ADD(l, pings_refused, 1);
                cws_conn_fail(l, c, CWS_CLOSE_POLICY_VIOLATION);
                return;
            }
        }
        cws_msg *m = cws_msg_frame(CWS_OP_PONG, payload, len);
        if (!m) {
            cws_conn_finish(l, c);
            return;
        }
        /* Pongs count against the send-queue limit like any frame (a peer
         * that pings and never reads would otherwise grow the queue without
         * bound), and one waiting to be written answers the newest ping. */
        if (!cws_sendq_replace_tail_pong(c, m) && cws_loop_send_frame(l, c, m) < 0) cws_conn_finish(l, c);
        cws_msg_release(m);
        return;
    }
    if (opcode == CWS_OP_PONG) return; /* counted as activity by the frame loop */
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
    cws_conn_cold *cold = reason_len ? cws_conn_cold_get(c) : NULL;
    if (cold && (cold->reason = malloc(reason_len))) {
        memcpy(cold->reason, reason, reason_len);
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

void cws_conn_frames(cws_loop *l, cws_conn *c, uint8_t *p, size_t len) {
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
        /* Activity, for the idle timeout and our keep-alive ping: anything but
         * a ping (a peer that only pings is idle, and must answer ours). */
        if (op != CWS_OP_PING) {
            c->active_tick = l->tick;
            c->flags &= (uint16_t)~CWS_CF_PING_SENT;
        }
        if (op >= CWS_OP_CLOSE) {
            if (ev.frame_start && ev.frame_end) {
                cws_conn_control(l, c, op, ev.payload, ev.payload_len);
                continue;
            }
            /* A control frame split across reads: gather its <= 125 bytes. */
            cws_conn_cold *cold = cws_conn_cold_get(c);
            if (!cold || (!cold->ctrl && !(cold->ctrl = malloc(125)))) {
                cws_conn_finish(l, c);
                return;
            }
            memcpy(cold->ctrl + ev.payload_offset, ev.payload, ev.payload_len);
            if (ev.frame_end) {
                uint8_t *ctrl = cold->ctrl;
                cold->ctrl = NULL; /* the control frame may close and finish c */
                cws_conn_control(l, c, op, ctrl, (size_t)ev.header.payload_len);
                free(ctrl);
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
            /* Reserve the whole frame at once: one allocation per frame (a
             * message block when the frame is the whole message). */
            int whole = ev.message_start && ev.header.fin && !c->rbuf;
            if ((whole ? cws_rmsg_start(c, ev.header.payload_len) : cws_rbuf_reserve(c, ev.header.payload_len)) < 0) {
                cws_conn_fail(l, c, CWS_CLOSE_MESSAGE_TOO_BIG);
                return;
            }
        }
        if (ev.payload_len) {
            /* (Read straight into its place already: nothing to copy.) */
            if (ev.payload != c->rbuf + c->rlen) memcpy(c->rbuf + c->rlen, ev.payload, ev.payload_len);
            c->rlen += (uint32_t)ev.payload_len;
        }
        if (last) {
            /* The delivery holds the block too: a connection that ends
             * during the callback (out of memory for a queue) frees its
             * buffer, and the bytes being handed over must outlive that. */
            cws_msg *block = (c->flags & CWS_CF_RMSG) ? cws_rmsg_of(c) : NULL;
            if (block) cws_msg_retain(block);
            l->delivering = block;
            cws_conn_deliver(l, c, op, c->rbuf, c->rlen);
            l->delivering = NULL;
            /* Free the reassembly buffer: idle connections stay small. */
            cws_rbuf_free(c);
            cws_msg_release(block);
        }
    }
}
