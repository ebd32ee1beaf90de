/*
 * Connection ids and slots: each loop's slot table (in chunks, so any thread
 * can check an id's generation without a lock) and the ids that name a
 * connection for its life.
 */
#include "engine_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- ids and slots ------------------------------------------------------- */

cws_conn *cws_loop_conn(cws_loop *l, cws_conn_id id) {
    uint32_t slot = cws_id_slot(id);
    if (slot >= l->nslots) return NULL;
    cws_slot *s = cws_slot_at(l, slot);
    cws_conn *c = s->conn;
    if (!c || c->gen != cws_id_gen(id) || c->state == CWS_CONN_DEAD) return NULL;
    return c;
}

/* Any thread: 0 if the id may still be live, -ENOENT if it surely is not. */
int cws_id_check(cws_server *s, cws_conn_id id, cws_loop **out) {
    uint32_t li = cws_id_loop(id);
    if (!s || li >= s->nloops || cws_id_gen(id) == 0) return -ENOENT;
    cws_loop *l = &s->loops[li];
    cws_slot *slot = cws_slot_at(l, cws_id_slot(id));
    if (!slot || atomic_load_explicit(&slot->gen, memory_order_acquire) != cws_id_gen(id)) return -ENOENT;
    *out = l;
    return 0;
}

int cws_slot_alloc(cws_loop *l, uint32_t *out) {
    if (l->nfree) {
        *out = l->free_slots[--l->nfree];
        return 0;
    }
    uint32_t slot = l->nslots;
    if (slot >= (1u << CWS_SLOT_BITS)) return -1;
    uint32_t ci = slot >> CWS_SLOT_CHUNK_BITS;
    if (!atomic_load_explicit(&l->chunks[ci], memory_order_relaxed)) {
        cws_slot *chunk = calloc(CWS_SLOT_CHUNK, sizeof *chunk);
        if (!chunk) return -1;
        for (uint32_t i = 0; i < CWS_SLOT_CHUNK; i++) atomic_init(&chunk[i].gen, 1);
        atomic_store_explicit(&l->chunks[ci], chunk, memory_order_release);
    }
    l->nslots++;
    *out = slot;
    return 0;
}

void cws_slot_free(cws_loop *l, uint32_t slot) {
    if (l->nfree == l->free_cap) {
        uint32_t cap = l->free_cap ? l->free_cap * 2 : 256;
        uint32_t *n = realloc(l->free_slots, cap * sizeof *n);
        if (!n) return; /* the slot leaks; the id space is large */
        l->free_slots = n;
        l->free_cap = cap;
    }
    l->free_slots[l->nfree++] = slot;
}
