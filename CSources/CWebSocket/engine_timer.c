/*
 * A coarse timer wheel per loop: each connection has at most one deadline
 * (handshake, idle check, pong, close), linked into the bucket of its tick.
 * Ticks are driven by the backend's wait timeout, so there is no kernel timer
 * per connection, and re-arming is two pointer updates.
 */
#include "engine_internal.h"

#include <time.h>

uint64_t cws_monotonic_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The list head that c is linked from when it has no predecessor: the due
 * list while the wheel fires it, else its bucket. */
static cws_conn **cws_timer_head(cws_loop *l, cws_conn *c) {
    return l->timer_due == c ? &l->timer_due : &l->wheel[c->timer_tick % CWS_WHEEL_SIZE];
}

void cws_timer_clear(cws_loop *l, cws_conn *c) {
    cws_conn **head = cws_timer_head(l, c);
    if (!c->timer_prev && *head != c) return; /* not linked */
    if (c->timer_prev) c->timer_prev->timer_next = c->timer_next;
    else *head = c->timer_next;
    if (c->timer_next) c->timer_next->timer_prev = c->timer_prev;
    c->timer_next = c->timer_prev = NULL;
}

void cws_timer_set(cws_loop *l, cws_conn *c, uint32_t ms) {
    cws_timer_clear(l, c);
    uint32_t tick_ms = l->srv->tick_ms;
    /* Round up and add one: the current tick is partly over already, and a
     * deadline must never fire early. In 64 bits: ms near UINT32_MAX (49.7
     * days) would wrap to a deadline in the past. Anything past the tick
     * counter's half range is clamped there (still years at 10 ms a tick). */
    uint64_t ticks = ((uint64_t)ms + tick_ms - 1) / tick_ms + 1;
    if (ticks > INT32_MAX) ticks = INT32_MAX;
    c->timer_tick = l->tick + (uint32_t)ticks;
    cws_conn **head = &l->wheel[c->timer_tick % CWS_WHEEL_SIZE];
    c->timer_prev = NULL;
    c->timer_next = *head;
    if (*head) (*head)->timer_prev = c;
    *head = c;
}

/*
 * The due entries of a bucket move to l->timer_due before any fires: fire
 * can set or clear any connection's timer (a timeout's on_close fans out, a
 * neighbour's queue overflows, its close timer is set), so walking the
 * bucket with a saved next pointer could follow an entry into another
 * bucket and skip the rest of this one for a whole revolution. An entry
 * re-armed or cleared meanwhile leaves the due list through cws_timer_clear.
 */
void cws_timer_advance(cws_loop *l, void (*fire)(cws_loop *, cws_conn *)) {
    uint32_t target = (uint32_t)(l->now_ms / l->srv->tick_ms);
    while ((int32_t)(target - l->tick) > 0) {
        l->tick++;
        cws_conn **bucket = &l->wheel[l->tick % CWS_WHEEL_SIZE];
        for (cws_conn *c = *bucket, *next; c; c = next) {
            next = c->timer_next;
            /* Entries a whole wheel turn (or more) away stay put. */
            if ((int32_t)(c->timer_tick - l->tick) > 0) continue;
            cws_timer_clear(l, c);
            c->timer_next = l->timer_due;
            if (l->timer_due) l->timer_due->timer_prev = c;
            l->timer_due = c;
        }
        while (l->timer_due) {
            cws_conn *c = l->timer_due;
            cws_timer_clear(l, c);
            fire(l, c); /* may re-arm or clear c, or any other connection */
        }
    }
}
