/*
 * permessage-deflate in the engine: the loop's shared compressors and
 * decompressors or a connection's own, compress-once fan-out, and compressed
 * message input.
 */
#include "engine_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- permessage-deflate ----------------------------------------------------- */


/* Decompressors for connections without client context takeover are the
 * loop's: taken for one message, reset and given back, so an idle connection
 * holds no zlib state. A 15-bit window inflates any client's stream. */
static cws_inflater *cws_loop_inflater_get(cws_loop *l) {
    if (l->nzinf_idle) return l->zinf_idle[--l->nzinf_idle];
    return cws_inflater_new(15, 0);
}

static void cws_loop_inflater_put(cws_loop *l, cws_inflater *f) {
    if (!f) return;
    cws_inflater_reset(f);
    if (l->nzinf_idle < sizeof l->zinf_idle / sizeof l->zinf_idle[0]) l->zinf_idle[l->nzinf_idle++] = f;
    else cws_inflater_free(f);
}

/* The scratch buffer keeps its size between messages, up to a point: one
 * huge message must not pin megabytes for the life of the loop. */
static void cws_loop_zbuf_trim(cws_loop *l) {
    l->zbuf.len = 0;
    if (l->zbuf.cap > (1u << 20)) cws_buffer_free(&l->zbuf);
}

void cws_conn_zfree(cws_loop *l, cws_conn *c) {
    cws_conn_cold *z = c->cold;
    if (!z) return;
    cws_deflater_free(z->zdef);
    z->zdef = NULL;
    if (z->zinf) {
        if (c->pmd & CWS_PMD_CLIENT_NCT) cws_loop_inflater_put(l, z->zinf);
        else cws_inflater_free(z->zinf);
        z->zinf = NULL;
    }
}

/*
 * The frame to queue on c for the data message m: m itself (small, or not
 * smaller compressed), m's shared compressed variant (no server context
 * takeover: made once by whichever loop needs it first), or a frame compressed
 * with c's own context. Returns a new reference, or NULL (out of memory).
 */
cws_msg *cws_conn_compress(cws_loop *l, cws_conn *c, cws_msg *m) {
    const cws_deflate_config *dc = &l->srv->cfg.deflate;
    cws_conn_cold *z = c->cold; /* made at the upgrade that negotiated compression */
    const uint8_t *payload = m->data + m->hdr_len;
    size_t plen = m->len - m->hdr_len;
    if (plen < dc->min_size) {
        cws_msg_retain(m);
        return m;
    }
    if (!(c->pmd & CWS_PMD_SERVER_NCT)) {
        if (!z->zdef && !(z->zdef = cws_deflater_new(dc->level, dc->mem_level, z->z_sbits, 1))) return NULL;
        l->zbuf.len = 0;
        cws_msg *framed = NULL;
        if (cws_deflater_message(z->zdef, payload, plen, &l->zbuf) == 0)
            framed = cws_msg_frame_rsv(m->opcode, CWS_RSV1, l->zbuf.data, l->zbuf.len);
        cws_loop_zbuf_trim(l);
        return framed;
    }
    /* A variant made with a window no bigger than c's is valid for c. */
    cws_msg *v = atomic_load_explicit(&m->zvar, memory_order_acquire);
    if (v && (v == m || v->zbits <= z->z_sbits)) {
        cws_msg_retain(v);
        return v;
    }
    cws_deflater **dp = &l->zdef[z->z_sbits - 8];
    if (!*dp && !(*dp = cws_deflater_new(dc->level, dc->mem_level, z->z_sbits, 0))) return NULL;
    l->zbuf.len = 0;
    if (cws_deflater_message(*dp, payload, plen, &l->zbuf) < 0) {
        cws_loop_zbuf_trim(l);
        return NULL;
    }
    cws_msg *made = m;
    if (l->zbuf.len < plen) {
        made = cws_msg_frame_rsv(m->opcode, CWS_RSV1, l->zbuf.data, l->zbuf.len);
        if (!made) {
            cws_loop_zbuf_trim(l);
            return NULL;
        }
        made->zbits = z->z_sbits;
    } else {
        cws_msg_retain(m); /* not smaller: send the message as it is */
    }
    cws_loop_zbuf_trim(l);
    if (!v) {
        /* Publish it; the slot holds its own reference. If another loop got
         * there first, keep ours for this send and let theirs serve the rest. */
        cws_msg *expected = NULL;
        if (made != m) cws_msg_retain(made);
        if (!atomic_compare_exchange_strong_explicit(&m->zvar, &expected, made, memory_order_acq_rel,
                                                     memory_order_acquire) &&
            made != m)
            cws_msg_release(made);
    }
    return made;
}

/*
 * How far a compressed message may inflate once zin compressed bytes of it
 * have arrived: the message size limit, and (when configured)
 * max_inflate_ratio times zin plus 64 KiB (so small, very repetitive
 * messages pass). Inflating stops at the
 * limit, so a bomb (16 KB that inflates to 16 MiB) costs the loop CPU in
 * proportion to what the peer sent, not to what it would expand to.
 */
static uint64_t cws_inflate_limit(const cws_server_config *cfg, uint64_t zin, int *by_ratio) {
    uint64_t ratio_cap = zin * cfg->deflate.max_inflate_ratio + (64u << 10);
    *by_ratio = cfg->deflate.max_inflate_ratio && ratio_cap < cfg->max_message_size;
    return *by_ratio ? ratio_cap : cfg->max_message_size;
}

/* A piece of a compressed data message. Returns -1 if the connection failed. */
int cws_conn_zinput(cws_loop *l, cws_conn *c, uint8_t op, const cws_frame_event *ev) {
    cws_conn_cold *z = c->cold; /* made at the upgrade that negotiated compression */
    if (ev->message_start && ev->frame_start) z->zin = 0;
    z->zin += (uint32_t)ev->payload_len;
    int by_ratio;
    uint64_t max = cws_inflate_limit(&l->srv->cfg, z->zin, &by_ratio);
    int last = ev->frame_end && ev->header.fin;
    int whole = ev->message_start && ev->frame_start && last;
    int shared = (c->pmd & CWS_PMD_CLIENT_NCT) != 0;
    cws_utf8_state *u = op == CWS_OP_TEXT ? &c->utf8 : NULL;
    cws_inflater *f;
    if (whole && shared) {
        f = cws_loop_inflater_get(l);
    } else {
        /* Takeover: c's own context for its life. Otherwise borrow one of the
         * loop's until this message is complete. */
        if (!z->zinf) z->zinf = shared ? cws_loop_inflater_get(l) : cws_inflater_new(z->z_cbits, 1);
        f = z->zinf;
    }
    if (!f) {
        cws_conn_fail(l, c, CWS_CLOSE_INTERNAL_ERROR);
        return -1;
    }
    int rc;
    if (whole) {
        /* The whole message is here: inflate into the loop's scratch. */
        l->zbuf.len = 0;
        rc = cws_inflater_feed(f, ev->payload, ev->payload_len, 1, &l->zbuf, max, u);
        if (shared) cws_loop_inflater_put(l, f);
        if (rc == 0 && u && cws_utf8_finish(u) != CWS_UTF8_VALID) rc = -CWS_CLOSE_INVALID_PAYLOAD;
        if (rc == 0) cws_conn_deliver(l, c, op, l->zbuf.data, l->zbuf.len);
        cws_loop_zbuf_trim(l);
    } else {
        /* In pieces: inflate into the reassembly buffer as they come. */
        cws_buffer b = {c->rbuf, c->rlen, c->rcap};
        rc = cws_inflater_feed(f, ev->payload, ev->payload_len, last, &b, max, u);
        c->rbuf = b.data;
        c->rlen = (uint32_t)b.len;
        c->rcap = (uint32_t)b.cap;
        if (rc == 0 && last && u && cws_utf8_finish(u) != CWS_UTF8_VALID) rc = -CWS_CLOSE_INVALID_PAYLOAD;
        if (rc == 0 && last) {
            if (shared) {
                cws_loop_inflater_put(l, z->zinf);
                z->zinf = NULL;
            }
            cws_conn_deliver(l, c, op, c->rbuf, c->rlen);
            free(c->rbuf);
            c->rbuf = NULL;
            c->rlen = c->rcap = 0;
        }
    }
    if (rc < 0) {
        if (rc == -CWS_CLOSE_MESSAGE_TOO_BIG && by_ratio) CWS_STAT_ADD(l, inflate_refused, 1);
        cws_conn_fail(l, c, (uint16_t)-rc);
        return -1;
    }
    return 0;
}
