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

void cws_timer_clear(cws_loop *l, cws_conn *c) {
    if (!c->timer_prev && l->wheel[c->timer_tick % CWS_WHEEL_SIZE] != c) return; /* not linked */
    if (c->timer_prev) c->timer_prev->timer_next = c->timer_next;
    else l->wheel[c->timer_tick % CWS_WHEEL_SIZE] = c->timer_next;
    if (c->timer_next) c->timer_next->timer_prev = c->timer_prev;
    c->timer_next = c->timer_prev = NULL;
}

void cws_timer_set(cws_loop *l, cws_conn *c, uint32_t ms) {
    cws_timer_clear(l, c);
    uint32_t tick_ms = l->srv->tick_ms;
    /* Round up and add one: the current tick is partly over already, and a
     * deadline must never fire early. */
    uint32_t ticks = (ms + tick_ms - 1) / tick_ms + 1;
    c->timer_tick = l->tick + ticks;
    cws_conn **head = &l->wheel[c->timer_tick % CWS_WHEEL_SIZE];
    c->timer_prev = NULL;
    c->timer_next = *head;
    if (*head) (*head)->timer_prev = c;
    *head = c;
}

void cws_timer_advance(cws_loop *l, void (*fire)(cws_loop *, cws_conn *)) {
    uint32_t target = (uint32_t)(l->now_ms / l->srv->tick_ms);
    while ((int32_t)(target - l->tick) > 0) {
        l->tick++;
        cws_conn *c = l->wheel[l->tick % CWS_WHEEL_SIZE];
        while (c) {
            cws_conn *next = c->timer_next;
            /* Entries a whole wheel turn (or more) away stay put. */
            if ((int32_t)(c->timer_tick - l->tick) <= 0) {
                cws_timer_clear(l, c);
                fire(l, c); /* may re-arm c (into another bucket) or free it */
            }
            c = next;
        }
    }
}
