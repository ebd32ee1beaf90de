/*
 * Flow control: the application stops reading a connection's socket while it
 * cannot keep up with its messages, so the peer is held back by TCP itself
 * (its send buffer fills, its writes block) instead of by a growing queue in
 * the server. Messages already read when the stop takes effect are still
 * delivered: at most one read's worth (64 KiB of input) per connection.
 *
 * Pauses are counted: a pause made on the loop thread takes effect at once,
 * a resume from another thread when the loop runs it, so the two may land in
 * either order; with a count, every pause matched by one resume leaves the
 * socket read whatever the order.
 */
#include "engine_internal.h"

#include <errno.h>

/* A deferred request is not read either, whatever the holds say (the
 * application's resumes must not undo it): what the client sends next waits
 * in the kernel until the answer. */
void cws_conn_apply_reading(cws_loop *l, cws_conn *c) {
    int paused = (c->read_holds > 0 || c->state == CWS_CONN_DEFERRED) && !(c->flags & CWS_CF_CLOSE_SENT);
    if (paused == !!(c->flags & CWS_CF_PAUSED)) return;
    if (paused) c->flags |= CWS_CF_PAUSED;
    else c->flags &= (uint16_t)~CWS_CF_PAUSED;
    l->srv->ops->conn_reading(l, c);
}

void cws_conn_hold_reading(cws_loop *l, cws_conn *c, int pause) {
    if (c->state == CWS_CONN_DEAD) return;
    if (pause) {
        if (c->read_holds < UINT16_MAX) c->read_holds++;
    } else if (c->read_holds) {
        c->read_holds--;
    }
    cws_conn_apply_reading(l, c);
}

void cws_conn_force_reading(cws_loop *l, cws_conn *c) {
    c->read_holds = 0;
    if (c->state != CWS_CONN_DEAD) cws_conn_apply_reading(l, c);
}

static int cws_hold(cws_server *s, cws_conn_id id, int pause) {
    cws_loop *l;
    if (cws_id_check(s, id, &l) < 0) return -ENOENT;
    if (cws_current_loop == l) {
        cws_conn *c = cws_loop_conn(l, id);
        if (!c) return -ENOENT;
        cws_conn_hold_reading(l, c, pause);
        return 0;
    }
    return cws_loop_post(l, (cws_cmd){.id = id, .reading = pause ? CWS_CMD_PAUSE : CWS_CMD_RESUME});
}

int cws_pause_reading(cws_server *s, cws_conn_id id) { return cws_hold(s, id, 1); }
int cws_resume_reading(cws_server *s, cws_conn_id id) { return cws_hold(s, id, 0); }
