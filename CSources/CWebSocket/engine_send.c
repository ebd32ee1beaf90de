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
    }
    pthread_mutex_unlock(&l->inbox_lock);
    if (rc == 0) cws_loop_wake(l);
    return rc;
}

static int cws_post(cws_loop *l, cws_conn_id id, cws_msg *m, uint16_t close_code) {
    return cws_loop_post(l, (cws_cmd){.id = id, .msg = m, .close_code = close_code});
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
            if (l->dead || cws_inbox_reserve(l, 1) < 0) break;
            cws_msg_retain(m);
            l->inbox[l->ninbox++] = (cws_cmd){.id = ids[i], .msg = m};
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
