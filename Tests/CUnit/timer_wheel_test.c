// sources: engine_timer.c
/*
 * The engine's timer wheel (engine_timer.c) alone, without sockets or threads:
 * a fake loop, connections that are only timer entries, and a fire callback
 * that does what the engine's timeouts do (re-arm another connection).
 * Built and run by scripts/c-unit-tests.
 */
#include "engine_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 4

static int failures;
#define CHECK(cond, ...)                                                                                   \
    do {                                                                                                   \
        if (!(cond)) {                                                                                     \
            failures++;                                                                                    \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                    \
            printf(__VA_ARGS__);                                                                           \
            printf("\n");                                                                                  \
        }                                                                                                  \
    } while (0)

static cws_conn conns[N];
static int fired[N];
static int rearm_victim; /* the first fire re-arms this connection (-1: none) */
static int first_done;

static void on_fire(cws_loop *l, cws_conn *c) {
    int i = (int)(c - conns);
    fired[i]++;
    if (!first_done && rearm_victim >= 0 && rearm_victim != i) {
        first_done = 1;
        /* As a timeout's on_close can: a neighbour's queue overflows and its
         * close timer is set, moving it to another bucket. */
        cws_timer_set(l, &conns[rearm_victim], 500);
    }
}

/* A fresh loop (10 ms ticks) and fresh connections; victim as in on_fire. */
static cws_loop *new_loop(cws_server *srv, int victim) {
    memset(srv, 0, sizeof *srv);
    cws_loop *l = calloc(1, sizeof *l);
    srv->tick_ms = 10;
    l->srv = srv;
    memset(conns, 0, sizeof conns);
    memset(fired, 0, sizeof fired);
    rearm_victim = victim;
    first_done = 0;
    return l;
}

/* Entries due in one tick all fire in it, whichever of them a fire re-arms. */
static void test_rearm_during_fire(void) {
    for (int victim = 0; victim < N; victim++) {
        cws_server srv;
        cws_loop *l = new_loop(&srv, victim);
        for (int i = 0; i < N; i++) cws_timer_set(l, &conns[i], 100); /* one bucket */
        l->now_ms = 200;
        cws_timer_advance(l, on_fire);
        int first = -1;
        for (int i = 0; i < N; i++)
            if (fired[i] && first < 0) first = i;
        for (int i = 0; i < N; i++) {
            if (i == victim && i != first) continue; /* re-armed before its turn, or after it fired */
            CHECK(fired[i] >= 1, "victim %d: connection %d did not fire in its tick", victim, i);
        }
        /* The re-armed one fires at its new deadline. */
        l->now_ms = 800;
        cws_timer_advance(l, on_fire);
        CHECK(fired[victim] >= 1, "victim %d: re-armed connection never fired", victim);
        for (int i = 0; i < N; i++) CHECK(fired[i] <= 2, "connection %d fired %d times", i, fired[i]);
        free(l);
    }
}

/* A timeout of 49.7 days or more must not wrap to a deadline in the past. */
static void test_long_timeout_does_not_wrap(void) {
    cws_server srv;
    cws_loop *l = new_loop(&srv, -1);
    cws_timer_set(l, &conns[0], UINT32_MAX);
    cws_timer_set(l, &conns[1], UINT32_MAX - 5);
    l->now_ms = 10000;
    cws_timer_advance(l, on_fire);
    CHECK(!fired[0] && !fired[1], "a 49.7-day timeout fired after 10 s (%d, %d)", fired[0], fired[1]);
    cws_timer_clear(l, &conns[0]);
    cws_timer_clear(l, &conns[1]);
    free(l);
}

/* Clearing any entry of a bucket (head, middle, tail) unlinks only it. */
static void test_clear_keeps_the_rest(void) {
    for (int gone = 0; gone < N; gone++) {
        cws_server srv;
        cws_loop *l = new_loop(&srv, -1);
        for (int i = 0; i < N; i++) cws_timer_set(l, &conns[i], 50);
        cws_timer_clear(l, &conns[gone]);
        cws_timer_clear(l, &conns[gone]); /* twice is harmless */
        l->now_ms = 100;
        cws_timer_advance(l, on_fire);
        for (int i = 0; i < N; i++)
            CHECK(fired[i] == (i != gone), "cleared %d: connection %d fired %d times", gone, i, fired[i]);
        free(l);
    }
}

int main(void) {
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"rearm_during_fire", test_rearm_during_fire},
        {"long_timeout_does_not_wrap", test_long_timeout_does_not_wrap},
        {"clear_keeps_the_rest", test_clear_keeps_the_rest},
    };
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        int before = failures;
        tests[i].fn();
        if (failures == before) passed++, printf("ok   %s\n", tests[i].name);
        else failed++, printf("FAIL %s\n", tests[i].name);
    }
    printf("timer wheel: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
