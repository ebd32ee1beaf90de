/*
 * The loop's own work: accepting, timeouts, a turn (timers, flushes, freeing),
 * the inbox from other threads, and graceful stop.
 */
#include "engine_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

__thread cws_loop *cws_current_loop;

/* ---- accept and timers ------------------------------------------------------ */

void cws_loop_accepted(cws_loop *l, int fd, unsigned listener) {
    uint32_t slot;
    cws_conn *c = calloc(1, sizeof *c);
    if (!c || l->stopping || cws_slot_alloc(l, &slot) < 0) {
        free(c);
        close(fd);
        return;
    }
    CWS_STAT_ADD(l, accepted, 1);
    if (l->accept_episode) {
        l->accept_episode = 0;
        fprintf(stderr, "cwebsocket: loop %u: accepting again\n", l->index);
    }
    cws_slot *s = cws_slot_at(l, slot);
    c->fd = fd;
    c->slot = slot;
    c->gen = atomic_load_explicit(&s->gen, memory_order_relaxed);
    c->slotp = s;
    c->state = CWS_CONN_HANDSHAKE;
    s->conn = c;
    l->live++;
    CWS_STAT_ADD(l, sockets, 1);
    cws_timer_set(l, c, l->srv->cfg.handshake_timeout_ms);
    if ((l->srv->listener_tls[listener] && cws_tls_conn_new(l, c) < 0) || l->srv->ops->conn_start(l, c) < 0) cws_conn_finish(l, c);
}

/* How long a paused listener waits before it tries again when no connection
 * of its own has closed (descriptors may free up elsewhere in the process). */
#define CWS_ACCEPT_RETRY_MS 250

int cws_loop_accept_failed(cws_loop *l, int err) {
    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) return 0;
    /* The connection stays in the backlog, so the listener stays ready:
     * retrying at once would spin (50,000 failed accepts a second). Stop
     * watching it until a connection is freed or the retry delay passes. */
    CWS_STAT_ADD(l, accept_errors, 1);
    if (!l->accept_episode) {
        l->accept_episode = 1;
        CWS_STAT_ADD(l, accept_pauses, 1);
        fprintf(stderr, "cwebsocket: loop %u: accept: %s with %u connections; paused until one closes\n", l->index,
                strerror(err), l->live);
    }
    if (!l->accept_paused) {
        l->accept_paused = 1;
        l->srv->ops->pause_accept(l, 1);
    }
    l->accept_retry_tick = l->tick + (CWS_ACCEPT_RETRY_MS + l->srv->tick_ms - 1) / l->srv->tick_ms;
    return 1;
}

static void cws_conn_timeout(cws_loop *l, cws_conn *c) {
    const cws_server_config *cfg = &l->srv->cfg;
    if (c->state == CWS_CONN_DEFERRED) {
        cws_deferred_refuse(l, c); /* the handshake timeout, from accept, covers the decision too */
        return;
    }
    if (c->state != CWS_CONN_OPEN) {
        /* Handshake, close or drain took too long. */
        if (c->state == CWS_CONN_HANDSHAKE) cws_tls_timed_out(l, c);
        cws_conn_finish(l, c);
        return;
    }
    if (c->flags & CWS_CF_PAUSED) {
        /* The application holds its input (it is still working through what
         * came): not idle, and a ping's answer could not be read. */
        c->active_tick = l->tick;
        c->flags &= (uint16_t)~CWS_CF_PING_SENT;
        cws_timer_set(l, c, cfg->idle_timeout_ms);
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
    if (!c->qcount) cws_sendq_free_ring(l, c);
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
        else if (c->state == CWS_CONN_DEFERRED) cws_deferred_refuse(l, c);
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
    l->inbox_bytes = 0;
    pthread_mutex_unlock(&l->inbox_lock);
    for (uint32_t i = 0; i < n; i++) {
        cws_cmd *cmd = &cmds[i];
        cws_conn *c = cws_loop_conn(l, cmd->id);
        int is_send = !cmd->reading && !cmd->close_code;
        if (cmd->reading >= CWS_CMD_DEFERRED_ACCEPT) {
            cws_deferred_command(l, c, cmd); /* with c NULL too: it may own the application's user */
        } else if (c) {
            if (cmd->reading == CWS_CMD_DRAIN) cws_conn_want_drain(l, c);
            else if (cmd->reading) cws_conn_hold_reading(l, c, cmd->reading == CWS_CMD_PAUSE);
            else if (cmd->close_code) cws_loop_close(l, c, cmd->msg, cmd->close_code);
            else cws_loop_send(l, c, cmd->msg);
        }
        /* Taken whatever became of it (queued, dropped, the id stale), after
         * the send queue counts it: cws_buffered_amount never misses it. */
        if (is_send) {
            cws_slot *slot = cws_slot_at(l, cws_id_slot(cmd->id));
            /* Only this thread writes taken: a load and a store, no locked add. */
            if (slot) atomic_store_explicit(&slot->taken, atomic_load_explicit(&slot->taken, memory_order_relaxed) +
                                                              cmd->msg->len, memory_order_release);
        }
        cws_msg_release(cmd->msg);
    }
    l->inbox_spare = cmds;
    l->spare_cap = cap;
    if (atomic_load_explicit(&l->srv->stopping, memory_order_acquire) && !l->stopping) cws_loop_begin_stop(l);
}

int cws_loop_turn(cws_loop *l) {
    cws_server *s = l->srv;
    const cws_callbacks *cb = &s->cfg.callbacks;
    /* Not only on a wake: a loop whose thread started after the stop began
     * (a stop from a callback on loop 0 while loop 1 was being created) had
     * no wake to see, and served on for good (CI: a test's stop that never
     * returned). */
    if (!l->stopping && atomic_load_explicit(&s->stopping, memory_order_acquire)) cws_loop_begin_stop(l);
    /* on_turn runs what was queued for it so far; what is queued for it from
     * here on (by the timers, flushes and closes below) asks again. */
    l->turn_again = 0;
    if (cb->on_turn) cb->on_turn(cb->ctx, l->index);
    l->now_ms = cws_monotonic_ms() - l->start_ms;
    cws_timer_advance(l, cws_conn_timeout);
    if (l->stopping && cws_monotonic_ms() >= atomic_load_explicit(&s->stop_deadline_ms, memory_order_acquire))
        cws_loop_force_close(l);
    /* Flush every connection that got output this turn: one write each, with
     * everything queued for it. */
    for (uint32_t i = 0; i < l->ndirty; i++) {
        cws_conn *c = cws_loop_conn(l, l->dirty[i]);
        if (!c) continue;
        c->flags &= (uint16_t)~CWS_CF_DIRTY;
        if (c->qcount && !(c->flags & CWS_CF_WANT_WRITE)) s->ops->conn_flush(l, c);
    }
    l->ndirty = 0;
    uint32_t freed = cws_loop_bury(l);
    if (l->accept_paused && !l->stopping && (freed || (int32_t)(l->tick - l->accept_retry_tick) >= 0)) {
        l->accept_paused = 0;
        s->ops->pause_accept(l, 0);
    }
    if (l->turn_again) return 0;
    uint64_t next = ((uint64_t)l->tick + 1) * s->tick_ms;
    uint64_t now = cws_monotonic_ms() - l->start_ms;
    return next > now ? (int)(next - now) : 0;
}

int cws_loop_done(const cws_loop *l) { return l->stopping && l->live == 0; }

void *cws_loop_thread(void *arg) {
    cws_loop *l = arg;
    cws_current_loop = l;
    if (l->fault_start) cws_loop_started(l, -EIO);
    else l->srv->ops->loop_run(l);
    /* A backend that returned before saying either way could not start. */
    int expected = 0;
    if (!atomic_compare_exchange_strong(&l->run_state, &expected, -EIO) && expected == 1)
        atomic_store_explicit(&l->run_state, 2, memory_order_release); /* ended: no more turns */
    cws_current_loop = NULL;
    return NULL;
}

void cws_loop_started(cws_loop *l, int rc) {
    if (rc < 0) fprintf(stderr, "cwebsocket: loop %u failed to start: %s\n", l->index, strerror(-rc));
    atomic_store_explicit(&l->run_state, rc < 0 ? rc : 1, memory_order_release);
}

int cws_loop_fault_wait(const cws_loop *l) {
    return l->fault_wait && atomic_load_explicit(&l->stats.connections, memory_order_relaxed) > 0;
}

void cws_loop_fail(cws_loop *l, const char *what, int err) {
    fprintf(stderr, "cwebsocket: loop %u died (%s: %s): closing its listener and %u connections\n", l->index, what,
            strerror(err), l->live);
    CWS_STAT_ADD(l, failed, 1);
    /* From here on cws_post refuses this loop (its inbox would only grow). */
    pthread_mutex_lock(&l->inbox_lock);
    l->dead = 1;
    pthread_mutex_unlock(&l->inbox_lock);
    l->stopping = 1;
    for (unsigned i = 0; i < CWS_MAX_LISTENERS; i++) {
        if (l->listen_fd[i] < 0) continue;
        /* Stop listening now, not when the last reference goes: a torn-down
         * ring drops its multishot accept's reference to the socket later, in
         * the kernel's own time, and until then the socket stays in the
         * SO_REUSEPORT group, takes its share of new connections and resets
         * them when it finally goes (a client saw EOF before any response). */
        shutdown(l->listen_fd[i], SHUT_RDWR);
        close(l->listen_fd[i]);
        l->listen_fd[i] = -1;
    }
    for (uint32_t i = 0; i < l->nslots; i++) {
        cws_conn *c = cws_slot_at(l, i)->conn;
        if (c && c->state != CWS_CONN_DEAD) {
            if (!c->close_code) c->close_code = CWS_CLOSE_ABNORMAL;
            cws_conn_finish(l, c);
        }
    }
    cws_loop_bury(l);
    cws_loop_drain_inbox(l); /* every id in it is stale now: only releases */
    /* A last turn for the application's own work on this loop (on_turn):
     * what the closes above queued for it runs here, not never. From now on
     * cws_server_wake_loop says -EPIPE, and its later work goes elsewhere. */
    const cws_callbacks *cb = &l->srv->cfg.callbacks;
    if (cb->on_turn) cb->on_turn(cb->ctx, l->index);
}
