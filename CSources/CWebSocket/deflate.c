/*
 * permessage-deflate (RFC 7692): offer negotiation and the per-message
 * compressor / decompressor, on zlib. Sans-IO: bytes in, bytes out.
 *
 * Wire format (section 7.2): a message is raw DEFLATE data ending in a sync
 * flush; the sender strips the trailing 00 00 FF FF of the flush's empty
 * stored block and the receiver appends it back before inflating.
 */
#include "cws_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* ---- configuration --------------------------------------------------------- */

void cws_deflate_config_init(cws_deflate_config *c) {
    memset(c, 0, sizeof *c);
    c->enabled = 0;
    /* Level 1: on JSON-like text it gets most of level 6's ratio at a
     * fraction of the CPU, and servers are CPU-bound per message. */
    c->level = 1;
    c->mem_level = 8;
    c->server_max_window_bits = 15;
    c->client_max_window_bits = 15;
    /* Default: no server context takeover, so one compressor per loop serves
     * every connection and a channel message is compressed once. */
    c->server_no_context_takeover = 1;
    c->client_no_context_takeover = 0;
    c->min_size = 64;
}

/* ---- negotiation ------------------------------------------------------------ */

static int cws_is_tchar(unsigned char ch) {
    /* RFC 9110 token characters. */
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')) return 1;
    return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static int cws_ieq(const char *p, size_t n, const char *lit) {
    size_t m = strlen(lit);
    if (n != m) return 0;
    for (size_t i = 0; i < n; i++) {
        char a = p[i], b = lit[i];
        if (a >= 'A' && a <= 'Z') a = (char)(a - 'A' + 'a');
        if (a != b) return 0;
    }
    return 1;
}

/* A little cursor over one header value. */
typedef struct cws_ext_cursor {
    const char *p, *end;
} cws_ext_cursor;

static void cws_skip_ws(cws_ext_cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t')) c->p++;
}

static size_t cws_take_token(cws_ext_cursor *c, const char **start) {
    *start = c->p;
    while (c->p < c->end && cws_is_tchar((unsigned char)*c->p)) c->p++;
    return (size_t)(c->p - *start);
}

/* Skips to just past the next top-level comma (quotes respected), or the end. */
static void cws_skip_offer(cws_ext_cursor *c) {
    int quoted = 0;
    while (c->p < c->end) {
        char ch = *c->p++;
        if (quoted) {
            if (ch == '\\' && c->p < c->end) c->p++;
            else if (ch == '"') quoted = 0;
        } else if (ch == '"') {
            quoted = 1;
        } else if (ch == ',') {
            return;
        }
    }
}

/* A parameter value as the RFC wants it: 1*DIGIT in 8..15 without leading
 * zeros (section 7.1.2). Quoted strings are unquoted first (RFC 6455 9.1: the
 * unquoted value must still be a token). Returns the value or -1. */
static int cws_window_bits_value(const char *v, size_t n) {
    if (n == 1 && v[0] >= '8' && v[0] <= '9') return v[0] - '0';
    if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5') return 10 + (v[1] - '0');
    return -1;
}

typedef struct cws_offer {
    int8_t server_nct, client_nct; /* seen */
    int8_t server_bits;            /* -1 absent, else 8..15 */
    int8_t client_bits;            /* -1 absent, 0 present without value, else 8..15 */
} cws_offer;

/*
 * Parses one offer starting at c->p (after optional whitespace). Returns 1 for
 * a well-formed permessage-deflate offer (filled in *o), 0 for any other
 * extension or a malformed / unacceptable permessage-deflate offer. Leaves the
 * cursor past the offer's comma.
 */
static int cws_parse_offer(cws_ext_cursor *c, cws_offer *o) {
    const char *name;
    cws_skip_ws(c);
    size_t nl = cws_take_token(c, &name);
    if (!nl || !cws_ieq(name, nl, "permessage-deflate")) {
        cws_skip_offer(c);
        return 0;
    }
    *o = (cws_offer){0, 0, -1, -1};
    int ok = 1;
    for (;;) {
        cws_skip_ws(c);
        if (c->p == c->end) break;
        if (*c->p == ',') {
            c->p++;
            break;
        }
        if (*c->p != ';') goto bad;
        c->p++;
        cws_skip_ws(c);
        const char *pn;
        size_t pl = cws_take_token(c, &pn);
        if (!pl) goto bad;
        cws_skip_ws(c);
        const char *val = NULL;
        size_t vl = 0;
        char unq[16];
        if (c->p < c->end && *c->p == '=') {
            c->p++;
            cws_skip_ws(c);
            if (c->p < c->end && *c->p == '"') {
                /* quoted-string: unescape into a small buffer (valid values
                 * are short). A longer one is read to its closing quote all
                 * the same: stopping inside it would let cws_skip_offer take
                 * a quoted comma for the end of the offer. */
                c->p++;
                vl = 0;
                for (;;) {
                    if (c->p == c->end) goto bad;
                    char ch = *c->p++;
                    if (ch == '"') break;
                    if (ch == '\\') {
                        if (c->p == c->end) goto bad;
                        ch = *c->p++;
                    }
                    if (vl < sizeof unq) unq[vl] = ch;
                    vl++;
                }
                val = unq;
                if (vl > sizeof unq) {
                    ok = 0; /* no parameter has a value this long */
                    vl = sizeof unq;
                }
                for (size_t i = 0; i < vl; i++)
                    if (!cws_is_tchar((unsigned char)unq[i])) ok = 0;
                if (!vl) ok = 0;
            } else {
                vl = cws_take_token(c, &val);
                if (!vl) goto bad;
            }
        }
        if (cws_ieq(pn, pl, "server_no_context_takeover")) {
            if (val || o->server_nct) ok = 0;
            o->server_nct = 1;
        } else if (cws_ieq(pn, pl, "client_no_context_takeover")) {
            if (val || o->client_nct) ok = 0;
            o->client_nct = 1;
        } else if (cws_ieq(pn, pl, "server_max_window_bits")) {
            int b = val ? cws_window_bits_value(val, vl) : -1;
            if (b < 0 || o->server_bits >= 0) ok = 0;
            o->server_bits = (int8_t)b;
        } else if (cws_ieq(pn, pl, "client_max_window_bits")) {
            int b = val ? cws_window_bits_value(val, vl) : 0;
            if (b < 0 || o->client_bits >= 0) ok = 0;
            o->client_bits = (int8_t)b;
        } else {
            ok = 0; /* unknown parameter: decline this offer (section 7) */
        }
    }
    return ok;
bad:
    cws_skip_offer(c);
    return 0;
}

static int cws_clamp_bits(int b, int lo) { return b < lo ? lo : b > 15 ? 15 : b; }

/*
 * Decides the answer to one well-formed offer. Returns 0 when accepted (with
 * *out and the response text), -1 when this offer must be declined.
 */
static int cws_answer_offer(const cws_deflate_config *cfg, const cws_offer *o, cws_deflate_params *out,
                            char *resp, size_t cap, size_t *len) {
    cws_deflate_params p;
    /* Section 7.1.1.1: the server may always add server_no_context_takeover,
     * and must keep it when offered. */
    p.server_no_context_takeover = (uint8_t)(o->server_nct || cfg->server_no_context_takeover);
    /* 7.1.1.2: client_no_context_takeover may always be added. Echo it when
     * offered too: the client already agreed, and it spares us a per-connection
     * inflate context. */
    p.client_no_context_takeover = (uint8_t)(o->client_nct || cfg->client_no_context_takeover);
    /* 7.1.2.1: never use a bigger window than offered; answer with the value. */
    int sbits = cws_clamp_bits(cfg->server_max_window_bits, 8);
    if (o->server_bits > 0 && o->server_bits < sbits) sbits = o->server_bits;
    int send_sbits = o->server_bits > 0 || sbits < 15;
    /* 7.1.2.2: client_max_window_bits may only be answered when offered, with
     * a value no larger than the offered one. Our inflater can use any window
     * at least as big as the client's (zlib inflates raw 8-bit windows), so an
     * offer of 8 is answered with 8. */
    int cbits = 15, send_cbits = 0;
    if (o->client_bits >= 0) {
        int limit = cws_clamp_bits(cfg->client_max_window_bits, 8);
        cbits = o->client_bits > 0 && o->client_bits < limit ? o->client_bits : limit;
        send_cbits = o->client_bits > 0 || cbits < 15;
    }
    p.server_max_window_bits = (uint8_t)sbits;
    p.client_max_window_bits = (uint8_t)cbits;
    int n = snprintf(resp, cap, "permessage-deflate%s%s", p.server_no_context_takeover ? "; server_no_context_takeover" : "",
                     p.client_no_context_takeover ? "; client_no_context_takeover" : "");
    if (n < 0 || (size_t)n >= cap) return -2;
    size_t at = (size_t)n;
    if (send_sbits) {
        n = snprintf(resp + at, cap - at, "; server_max_window_bits=%d", sbits);
        if (n < 0 || (size_t)n >= cap - at) return -2;
        at += (size_t)n;
    }
    if (send_cbits) {
        n = snprintf(resp + at, cap - at, "; client_max_window_bits=%d", cbits);
        if (n < 0 || (size_t)n >= cap - at) return -2;
        at += (size_t)n;
    }
    *out = p;
    *len = at;
    return 0;
}

int cws_deflate_negotiate(const cws_deflate_config *cfg, const cws_slice *values, size_t count,
                          cws_deflate_params *out, char *resp, size_t cap) {
    if (!cfg || !cfg->enabled) return 0;
    for (size_t h = 0; h < count; h++) {
        if (!values[h].ptr) continue;
        cws_ext_cursor c = {values[h].ptr, values[h].ptr + values[h].len};
        while (c.p < c.end) {
            cws_offer o;
            if (!cws_parse_offer(&c, &o)) continue;
            size_t len;
            int rc = cws_answer_offer(cfg, &o, out, resp, cap, &len);
            if (rc == -2) return -1;
            if (rc == 0) return (int)len;
        }
    }
    return 0;
}

int cws_deflate_negotiate_request(const cws_deflate_config *cfg, const cws_http_request *r,
                                  cws_deflate_params *out, char *resp, size_t cap) {
    cws_slice vals[CWS_HTTP_MAX_HEADERS];
    size_t n = 0;
    for (uint16_t i = 0; i < r->header_count; i++)
        if (cws_ieq(r->headers[i].name.ptr, r->headers[i].name.len, "sec-websocket-extensions"))
            vals[n++] = r->headers[i].value;
    return cws_deflate_negotiate(cfg, vals, n, out, resp, cap);
}

/* ---- buffers --------------------------------------------------------------- */

void cws_buffer_free(cws_buffer *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* Grows to at least want bytes, doubling, but not past limit (unless want is). */
static int cws_buffer_grow(cws_buffer *b, size_t want, size_t limit) {
    if (want <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < want) cap *= 2;
    if (cap > limit) cap = limit > want ? limit : want;
    uint8_t *n = realloc(b->data, cap);
    if (!n) return -1;
    b->data = n;
    b->cap = cap;
    return 0;
}

/* ---- zlib memory accounting -------------------------------------------------- */

/* zlib allocates through these, so the bytes a context holds can be reported
 * (and measured per connection). A 16-byte prefix keeps malloc's alignment. */
typedef struct cws_zmem {
    size_t bytes;
} cws_zmem;

static voidpf cws_zalloc(voidpf opaque, uInt items, uInt size) {
    size_t n = (size_t)items * size;
    size_t *p = malloc(n + 16);
    if (!p) return Z_NULL;
    p[0] = n;
    ((cws_zmem *)opaque)->bytes += n + 16;
    return (uint8_t *)p + 16;
}

static void cws_zfree(voidpf opaque, voidpf addr) {
    if (!addr) return;
    size_t *p = (size_t *)((uint8_t *)addr - 16);
    ((cws_zmem *)opaque)->bytes -= p[0] + 16;
    free(p);
}

/* ---- compressor ------------------------------------------------------------- */

struct cws_deflater {
    z_stream z;
    cws_zmem mem;
    uint8_t takeover;
    uint8_t bits;
};

cws_deflater *cws_deflater_new(int level, int mem_level, int window_bits, int context_takeover) {
    cws_deflater *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->z.zalloc = cws_zalloc;
    d->z.zfree = cws_zfree;
    d->z.opaque = &d->mem;
    d->takeover = context_takeover ? 1 : 0;
    level = level < 0 ? 0 : level > 9 ? 9 : level;
    mem_level = mem_level < 1 ? 1 : mem_level > 9 ? 9 : mem_level;
    d->bits = (uint8_t)cws_clamp_bits(window_bits, 8);
    /* zlib cannot make raw deflate with an 8-bit window (it refuses -8). A
     * 9-bit window with Z_RLE only ever refers back one byte, so its output
     * is valid for a 256-byte window. */
    int wb = d->bits == 8 ? 9 : d->bits;
    int strategy = d->bits == 8 ? Z_RLE : Z_DEFAULT_STRATEGY;
    if (deflateInit2(&d->z, level, Z_DEFLATED, -wb, mem_level, strategy) != Z_OK) {
        free(d);
        return NULL;
    }
    return d;
}

void cws_deflater_free(cws_deflater *d) {
    if (!d) return;
    deflateEnd(&d->z);
    free(d);
}

size_t cws_deflater_memory(const cws_deflater *d) { return d ? d->mem.bytes + sizeof *d : 0; }

int cws_deflater_message(cws_deflater *d, const void *in, size_t len, cws_buffer *out) {
    size_t start = out->len;
    if (!len) {
        /* An empty message is one 00 byte (section 7.2.3.6): the start of an
         * empty stored block whose rest is the stripped tail. zlib would emit
         * nothing at all for a second flush in a row. */
        if (cws_buffer_grow(out, out->len + 1, SIZE_MAX) < 0) return -CWS_CLOSE_INTERNAL_ERROR;
        out->data[out->len++] = 0;
        return 0;
    }
    d->z.next_in = (Bytef *)(uintptr_t)in;
    /* avail_in is 32-bit: feed huge messages in pieces. */
    size_t left = len;
    for (;;) {
        uInt piece = left > (1u << 30) ? (1u << 30) : (uInt)left;
        d->z.avail_in = piece;
        left -= piece;
        int flush = left ? Z_NO_FLUSH : Z_SYNC_FLUSH;
        for (;;) {
            /* A guess that fits most messages in one call; doubles after that. */
            if (out->cap - out->len < 64 && cws_buffer_grow(out, out->len + (d->z.avail_in >> 1) + 256, SIZE_MAX) < 0)
                goto fail;
            size_t room = out->cap - out->len;
            if (room > (1u << 30)) room = 1u << 30;
            d->z.next_out = out->data + out->len;
            d->z.avail_out = (uInt)room;
            int rc = deflate(&d->z, flush);
            out->len += room - d->z.avail_out;
            if (rc != Z_OK && rc != Z_BUF_ERROR) goto fail;
            /* Done with this piece once the input is in and zlib did not fill
             * the output (a full output may hide pending flush bytes). */
            if (d->z.avail_in == 0 && d->z.avail_out != 0) break;
        }
        if (!left) break;
    }
    /* A sync flush ends in an empty stored block: 00 00 FF FF. */
    if (out->len - start < 4 || memcmp(out->data + out->len - 4, "\x00\x00\xff\xff", 4) != 0) goto fail;
    out->len -= 4;
    if (!d->takeover) deflateReset(&d->z);
    return 0;
fail:
    out->len = start;
    deflateReset(&d->z);
    return -CWS_CLOSE_INTERNAL_ERROR;
}

/* ---- decompressor -------------------------------------------------------------- */

struct cws_inflater {
    z_stream z;
    cws_zmem mem;
    uint8_t takeover;
    uint8_t bits;
};

cws_inflater *cws_inflater_new(int window_bits, int context_takeover) {
    cws_inflater *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->z.zalloc = cws_zalloc;
    f->z.zfree = cws_zfree;
    f->z.opaque = &f->mem;
    f->takeover = context_takeover ? 1 : 0;
    f->bits = (uint8_t)cws_clamp_bits(window_bits, 8);
    if (inflateInit2(&f->z, -(int)f->bits) != Z_OK) {
        free(f);
        return NULL;
    }
    return f;
}

void cws_inflater_free(cws_inflater *f) {
    if (!f) return;
    inflateEnd(&f->z);
    free(f);
}

size_t cws_inflater_memory(const cws_inflater *f) { return f ? f->mem.bytes + sizeof *f : 0; }

void cws_inflater_reset(cws_inflater *f) { inflateReset(&f->z); }

/* A final block (BFINAL, section 7.2.3.4) ends zlib's stream; the message may go
 * on with a new one. With context takeover the window must survive that. */
static int cws_inflater_restart(cws_inflater *f) {
    if (!f->takeover) return inflateReset(&f->z) == Z_OK ? 0 : -1;
    uInt n = 0;
    uint8_t *dict = malloc((size_t)1 << f->bits);
    if (!dict) return -1;
    int ok = inflateGetDictionary(&f->z, dict, &n) == Z_OK && inflateReset(&f->z) == Z_OK &&
             (n == 0 || inflateSetDictionary(&f->z, dict, n) == Z_OK);
    free(dict);
    return ok ? 0 : -1;
}

/* Output goes out in pieces of at most this much, so UTF-8 fails fast and a
 * bomb is caught after one piece over the limit, not after the whole bomb. */
#define CWS_INFLATE_PIECE (64 * 1024)

static int cws_inflate_run(cws_inflater *f, const uint8_t *in, size_t len, cws_buffer *out, uint64_t max,
                           cws_utf8_state *utf8) {
    z_stream *z = &f->z;
    z->next_in = (Bytef *)(uintptr_t)in;
    z->avail_in = 0; /* an error may have left some of an earlier message's */
    size_t left = len;
    for (;;) {
        if (!z->avail_in && left) {
            uInt piece = left > (1u << 30) ? (1u << 30) : (uInt)left;
            z->avail_in = piece;
            left -= piece;
        }
        /* Room for the next piece, never beyond max + 1 bytes in total: one
         * byte more than allowed is how "too big" is detected. */
        uint64_t limit = max + 1;
        if (out->len >= limit) return -CWS_CLOSE_MESSAGE_TOO_BIG;
        size_t want = (size_t)(limit - out->len < CWS_INFLATE_PIECE ? limit - out->len : CWS_INFLATE_PIECE);
        if (out->cap - out->len < want) {
            size_t need = out->len + want;
            /* Small messages stay small: grow to what is needed, doubling. */
            if (cws_buffer_grow(out, need, (size_t)limit) < 0) return -CWS_CLOSE_INTERNAL_ERROR;
        }
        size_t room = out->cap - out->len;
        if (room > want) room = want;
        z->next_out = out->data + out->len;
        z->avail_out = (uInt)room;
        int rc = inflate(z, Z_SYNC_FLUSH);
        size_t got = room - z->avail_out;
        if (got) {
            if (utf8 && cws_utf8_feed(utf8, out->data + out->len, got, NULL) != CWS_UTF8_VALID)
                return -CWS_CLOSE_INVALID_PAYLOAD;
            out->len += got;
            if (out->len > max) return -CWS_CLOSE_MESSAGE_TOO_BIG;
        }
        switch (rc) {
        case Z_OK:
        case Z_BUF_ERROR:
            break;
        case Z_STREAM_END:
            if (cws_inflater_restart(f) < 0) return -CWS_CLOSE_INTERNAL_ERROR;
            break;
        case Z_MEM_ERROR:
            return -CWS_CLOSE_INTERNAL_ERROR;
        default: /* Z_DATA_ERROR, Z_NEED_DICT, Z_STREAM_ERROR */
            return -CWS_CLOSE_INVALID_PAYLOAD;
        }
        /* All input consumed and zlib stopped short of filling the output:
         * everything it can produce so far is out. */
        if (!z->avail_in && !left && z->avail_out) return 0;
        /* No progress with input left and room to spare cannot happen with a
         * sane stream; guard against spinning anyway. */
        if (rc == Z_BUF_ERROR && z->avail_out && !got) return -CWS_CLOSE_INVALID_PAYLOAD;
    }
}

int cws_inflater_feed(cws_inflater *f, const void *in, size_t len, int last, cws_buffer *out, uint64_t max,
                      cws_utf8_state *utf8) {
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    if (max > SIZE_MAX / 2) max = SIZE_MAX / 2; /* max + 1 must not wrap */
    int rc = len ? cws_inflate_run(f, in, len, out, max, utf8) : 0;
    if (rc == 0 && last) rc = cws_inflate_run(f, tail, 4, out, max, utf8);
    /* After an error the context is useless; a shared one must be clean for
     * the next message. */
    if (rc < 0 || (last && !f->takeover)) inflateReset(&f->z);
    return rc;
}
