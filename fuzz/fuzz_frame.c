/*
 * The frame parser, both roles: random bytes fed whole and in random splits
 * must give the same frames, the same error and the same *consumed total;
 * every call keeps the promises of cwebsocket.h (progress, consumed <= len,
 * need-more consumes everything, a failed parser stays failed and consumes
 * nothing); every accepted header and every error is checked against a model
 * of RFC 6455 section 5 written here; payloads are unmasked exactly; close
 * payloads are parsed and re-encoded; and frames encoded by cws_frame_encode
 * parse back to themselves.
 *
 * Input: [flags][limit][split seed: 4][stream]. flags bit 0: client role
 * (reads unmasked frames), bits 1-3: the RSV bits an extension claims,
 * bit 4: use the stream as a script for the encode -> parse round trip instead.
 */
#include "fuzz_common.h"

typedef struct frame_rec {
    cws_frame_header h;
    uint8_t message_opcode, message_start, complete;
    size_t payload_at, payload_len; /* in the log's arena */
} frame_rec;

typedef struct parse_log {
    frame_rec *frames;
    size_t nframes;
    uint8_t *arena;
    size_t arena_len;
    int error;       /* 0 or the negative close code */
    size_t consumed; /* total over the stream */
} parse_log;

typedef struct parse_cfg {
    cws_role role;
    uint8_t rsv_allowed;
    uint64_t max;
} parse_cfg;

static int header_eq(const cws_frame_header *a, const cws_frame_header *b) {
    return a->payload_len == b->payload_len && a->mask_key == b->mask_key && a->fin == b->fin && a->rsv == b->rsv &&
           a->opcode == b->opcode && a->masked == b->masked && a->header_len == b->header_len;
}

/* The model's verdict on a header, given whether a fragmented data message is
 * open: 0, 1002 or 1009. */
static int model_header(const parse_cfg *c, const cws_frame_header *h, int in_message) {
    int control = h->opcode >= 8;
    int known = h->opcode <= 2 || (h->opcode >= 8 && h->opcode <= 10);
    if (!known) return 1002;
    if (h->masked != (c->role == CWS_ROLE_SERVER)) return 1002;
    if (h->rsv && (!(h->opcode == 1 || h->opcode == 2) || (h->rsv & ~c->rsv_allowed))) return 1002;
    if (control) return (!h->fin || h->payload_len > 125) ? 1002 : 0;
    if (h->opcode == 0 && !in_message) return 1002;
    if (h->opcode != 0 && in_message) return 1002;
    if (c->max && h->payload_len > c->max) return 1009;
    return 0;
}

/* Checks one complete close frame's payload: parse, then encode and parse again. */
static void check_close_payload(const uint8_t *p, size_t len) {
    uint16_t code = 0;
    const uint8_t *reason = (const uint8_t *)1;
    size_t rlen = 99;
    int rc = cws_close_payload_parse(p, len, &code, &reason, &rlen);
    int expect;
    if (len == 0) expect = 0;
    else if (len == 1) expect = 1002;
    else if (!cws_close_code_valid((uint32_t)(p[0] << 8 | p[1]))) expect = 1002;
    else if (cws_utf8_validate_with(CWS_SIMD_SCALAR, p + 2, len - 2, NULL) != 0) expect = 1007;
    else expect = 0;
    FZ_CHECK(rc == expect, "close payload of %zu bytes: %d, want %d", len, rc, expect);
    if (rc) return;
    if (len == 0) {
        FZ_CHECK(code == 1005 && rlen == 0 && reason == NULL, "empty close payload");
        return;
    }
    FZ_CHECK(code == (p[0] << 8 | p[1]) && reason == p + 2 && rlen == len - 2, "close payload slices");
    uint8_t out[125];
    size_t n = cws_close_payload_encode(out, code, reason, rlen);
    FZ_CHECK(n == len && memcmp(out, p, len) == 0, "close payload re-encodes differently");
}

/* The encoder's truncation of long reasons: a prefix, at most 123 bytes, cut
 * at a character boundary of valid text. */
static void check_close_encode(const uint8_t *reason, size_t len, uint16_t code) {
    uint8_t out[125 + 16];
    memset(out, 0xEE, sizeof out);
    size_t n = cws_close_payload_encode(out, code, reason, len);
    if (code == 0) {
        FZ_CHECK(n == 0, "code 0 writes nothing");
        return;
    }
    FZ_CHECK(n >= 2 && n <= 125 && out[125] == 0xEE, "close encode wrote %zu bytes", n);
    FZ_CHECK(out[0] == code >> 8 && out[1] == (code & 0xFF), "close code bytes");
    size_t rl = n - 2;
    FZ_CHECK(rl <= len && (!rl || memcmp(out + 2, reason, rl) == 0), "reason is not a prefix");
    if (len <= 123) FZ_CHECK(rl == len, "short reason truncated");
    if (cws_utf8_validate_with(CWS_SIMD_SCALAR, reason, len, NULL) == 0) {
        FZ_CHECK(cws_utf8_validate_with(CWS_SIMD_SCALAR, out + 2, rl, NULL) == 0, "truncated reason is not UTF-8");
        if (len > 123) FZ_CHECK(rl >= 120, "truncated to %zu, more than one character", rl);
    }
}

/* Feeds the stream (a private copy: the parser unmasks in place) whole
 * (rng NULL, fixed 0), in chunks of `fixed` bytes, or in random chunks,
 * checking every call, into *log. */
static void run_parser(const parse_cfg *c, const uint8_t *orig, size_t len, fz_rng *rng, size_t fixed,
                       parse_log *log) {
    void *base;
    uint8_t *buf = fz_copy_at(orig, len, 0, &base);
    cws_parser p;
    cws_parser_init(&p, c->role, c->max);
    p.rsv_allowed = c->rsv_allowed;
    memset(log, 0, sizeof *log);
    log->frames = calloc(len / 2 + 2, sizeof *log->frames);
    log->arena = malloc(len + 1);
    if (!log->frames || !log->arena) abort();
    frame_rec *cur = NULL;
    int in_message = 0;
    size_t header_start = 0; /* where the header being read began */
    size_t pos = 0;
    while (pos < len) {
        size_t avail = rng ? fz_chunk(rng, len - pos) : fixed && fixed < len - pos ? fixed : len - pos;
        size_t end = pos + avail;
        while (pos < end) {
            size_t consumed = (size_t)-1;
            cws_frame_event ev;
            memset(&ev, 0xCC, sizeof ev);
            int rc = cws_parse(&p, buf + pos, end - pos, &consumed, &ev);
            FZ_CHECK(rc == 0 || rc == 1 || rc == -1002 || rc == -1009, "rc %d", rc);
            FZ_CHECK(consumed <= end - pos, "consumed %zu of %zu", consumed, end - pos);
            if (rc < 0) {
                pos += consumed;
                log->error = rc;
                log->consumed = pos;
                /* The model must agree that the header that ends here is bad. */
                cws_frame_header h;
                int d = cws_frame_header_decode(orig + header_start, pos - header_start, &h);
                FZ_CHECK(cur == NULL && (d == -1002 || d == (int)(pos - header_start)),
                         "error %d: consumed ends at %zu, header from %zu decodes to %d", rc, pos, header_start, d);
                if (d > 0) FZ_CHECK(model_header(c, &h, in_message) == -rc, "model says %d for error %d",
                                    model_header(c, &h, in_message), rc);
                else FZ_CHECK(rc == -1002, "top-bit length must fail with 1002");
                size_t again = 7;
                FZ_CHECK(cws_parse(&p, buf + pos, len - pos, &again, &ev) == rc && again == 0, "failed parser moved on");
                free(base);
                return;
            }
            if (rc == CWS_PARSE_NEED_MORE) {
                FZ_CHECK(consumed == end - pos, "need-more consumed %zu of %zu", consumed, end - pos);
                pos = end;
                break;
            }
            FZ_CHECK(consumed > 0, "an event without progress");
            FZ_CHECK(ev.payload_len <= consumed && ev.payload == buf + pos + consumed - ev.payload_len,
                     "payload is not the last bytes consumed");
            const cws_frame_header *h = &ev.header;
            if (ev.frame_start) {
                FZ_CHECK(cur == NULL, "frame start inside a frame");
                FZ_CHECK(model_header(c, h, in_message) == 0, "model rejects an accepted header (%d)",
                         model_header(c, h, in_message));
                size_t hl = 2 + (h->masked ? 4 : 0) + (h->payload_len >= 126 ? (h->payload_len > 0xFFFF ? 8 : 2) : 0);
                FZ_CHECK(h->header_len >= hl && h->header_len <= CWS_MAX_HEADER_SIZE, "header_len %u", h->header_len);
                FZ_CHECK(header_start + h->header_len == pos + consumed - ev.payload_len, "header bytes");
                cws_frame_header d;
                FZ_CHECK(cws_frame_header_decode(orig + header_start, h->header_len, &d) == h->header_len &&
                             header_eq(&d, h),
                         "event header differs from a decode of its bytes");
                if (h->opcode < 8) {
                    FZ_CHECK(ev.message_start == (h->opcode != 0), "message_start");
                    in_message = !h->fin;
                } else {
                    FZ_CHECK(ev.message_start == 0, "control message_start");
                }
                cur = &log->frames[log->nframes++];
                cur->h = *h;
                cur->message_opcode = ev.message_opcode;
                cur->message_start = ev.message_start;
                cur->payload_at = log->arena_len;
            } else {
                FZ_CHECK(cur != NULL && header_eq(&cur->h, h), "continuing event for another header");
                FZ_CHECK(ev.message_start == 0, "message_start on a later event");
            }
            if (h->opcode >= 8) FZ_CHECK(ev.message_opcode == h->opcode, "control message_opcode");
            else FZ_CHECK(ev.message_opcode == 1 || ev.message_opcode == 2, "data message_opcode %u", ev.message_opcode);
            FZ_CHECK(ev.message_opcode == cur->message_opcode, "message_opcode changed within a frame");
            FZ_CHECK(ev.payload_offset == cur->payload_len, "payload_offset %llu, have %zu",
                     (unsigned long long)ev.payload_offset, cur->payload_len);
            FZ_CHECK(ev.payload_len > 0 || ev.frame_start, "an empty event that starts nothing");
            /* Unmasked exactly (RFC 6455 5.3), from the original bytes. */
            const uint8_t *src = orig + pos + consumed - ev.payload_len;
            uint8_t key[4];
            memcpy(key, &h->mask_key, 4);
            for (size_t i = 0; i < ev.payload_len; i++) {
                uint8_t want = h->masked ? src[i] ^ key[(ev.payload_offset + i) % 4] : src[i];
                FZ_CHECK(ev.payload[i] == want, "payload byte %zu", i);
            }
            memcpy(log->arena + log->arena_len, ev.payload, ev.payload_len);
            log->arena_len += ev.payload_len;
            cur->payload_len += ev.payload_len;
            FZ_CHECK(ev.frame_end == (cur->payload_len == h->payload_len), "frame_end");
            pos += consumed;
            if (ev.frame_end) {
                cur->complete = 1;
                if (h->opcode == CWS_OP_CLOSE) check_close_payload(log->arena + cur->payload_at, cur->payload_len);
                cur = NULL;
                header_start = pos;
            }
        }
    }
    log->consumed = pos;
    free(base);
}

static void log_free(parse_log *l) {
    free(l->frames);
    free(l->arena);
}

static void logs_equal(const parse_log *a, const parse_log *b, const char *what) {
    FZ_CHECK(a->error == b->error, "%s: error %d vs %d", what, a->error, b->error);
    FZ_CHECK(a->consumed == b->consumed, "%s: consumed %zu vs %zu", what, a->consumed, b->consumed);
    FZ_CHECK(a->nframes == b->nframes, "%s: %zu frames vs %zu", what, a->nframes, b->nframes);
    FZ_CHECK(a->arena_len == b->arena_len && (!a->arena_len || memcmp(a->arena, b->arena, a->arena_len) == 0),
             "%s: payload bytes differ", what);
    for (size_t i = 0; i < a->nframes; i++) {
        const frame_rec *x = &a->frames[i], *y = &b->frames[i];
        FZ_CHECK(header_eq(&x->h, &y->h) && x->message_opcode == y->message_opcode &&
                     x->message_start == y->message_start && x->payload_len == y->payload_len &&
                     x->complete == y->complete,
                 "%s: frame %zu differs", what, i);
    }
}

/* Builds a valid frame sequence from the script, encodes it, parses it back. */
static void round_trip(const parse_cfg *c, fz_reader *script, fz_rng *rng) {
    size_t cap = 64 * 1024;
    uint8_t *wire = malloc(cap), *payloads = malloc(cap);
    frame_rec *want = calloc(256, sizeof *want);
    if (!wire || !payloads || !want) abort();
    size_t wlen = 0, plen = 0, n = 0;
    int in_message = 0;
    uint8_t masked = c->role == CWS_ROLE_SERVER;
    while (script->len && n < 256) {
        uint8_t op = fz_u8(script), sz = fz_u8(script);
        cws_frame_header h = {0};
        int control = (op & 3) == 3;
        if (control) {
            h.opcode = (uint8_t)(8 + (op >> 2) % 3);
            h.fin = 1;
            h.payload_len = sz % 126;
        } else {
            h.opcode = in_message ? 0 : (op & 4) ? 2 : 1;
            h.fin = (op >> 3) & 1;
            /* Lengths around the 7/16/64-bit encodings. */
            static const uint32_t sizes[] = {0, 1, 125, 126, 127, 200, 0xFFFF, 0x10000, 0x10001};
            h.payload_len = (op & 0x80) ? sizes[sz % 9] : sz;
            if (!in_message && (op & 0x40)) h.rsv = c->rsv_allowed & (op >> 4);
        }
        if (c->max && h.opcode < 8 && h.payload_len > c->max) h.payload_len = c->max;
        size_t need = cws_frame_header_size(h.payload_len, masked) + (size_t)h.payload_len;
        if (wlen + need > cap || plen + h.payload_len > cap) break;
        h.masked = masked;
        h.mask_key = masked ? (uint32_t)fz_next(rng) : 0;
        uint8_t *pl = payloads + plen;
        for (size_t i = 0; i < h.payload_len; i++) pl[i] = (uint8_t)fz_next(rng);
        if (h.opcode == CWS_OP_CLOSE) {
            /* A valid close payload, so the parse check inside run_parser passes. */
            if (h.payload_len == 1) h.payload_len = 0;
            if (h.payload_len >= 2) {
                pl[0] = 0x03;
                pl[1] = 0xE8;
                for (size_t i = 2; i < h.payload_len; i++) pl[i] = 'a' + pl[i] % 26;
            }
        }
        size_t hs = cws_frame_header_size(h.payload_len, masked);
        size_t w = cws_frame_encode(wire + wlen, h.fin, h.rsv, h.opcode, pl, (size_t)h.payload_len, masked, h.mask_key);
        FZ_CHECK(w == hs + h.payload_len, "encode wrote %zu, want %zu", w, (size_t)(hs + h.payload_len));
        /* The header alone must encode the same bytes. */
        uint8_t hb[CWS_MAX_HEADER_SIZE];
        FZ_CHECK(cws_frame_header_encode(hb, h.fin, h.rsv, h.opcode, h.payload_len, masked, h.mask_key) == hs &&
                     memcmp(hb, wire + wlen, hs) == 0,
                 "header encode differs from frame encode");
        h.header_len = (uint8_t)hs;
        frame_rec *f = &want[n++];
        f->h = h;
        f->message_opcode = h.opcode >= 8 ? h.opcode : h.opcode == 0 ? (uint8_t)(in_message >> 1) : h.opcode;
        f->message_start = h.opcode == 1 || h.opcode == 2;
        f->payload_at = plen;
        f->payload_len = (size_t)h.payload_len;
        f->complete = 1;
        if (h.opcode < 8) in_message = h.fin ? 0 : (f->message_opcode << 1) | 1;
        wlen += w;
        plen += (size_t)h.payload_len;
    }
    parse_log whole, split;
    run_parser(c, wire, wlen, NULL, 0, &whole);
    run_parser(c, wire, wlen, rng, 0, &split);
    logs_equal(&whole, &split, "round trip whole vs split");
    FZ_CHECK(whole.error == 0 && whole.consumed == wlen && whole.nframes == n, "round trip: error %d, %zu of %zu frames",
             whole.error, whole.nframes, n);
    FZ_CHECK(whole.arena_len == plen && (!plen || memcmp(whole.arena, payloads, plen) == 0), "round trip payloads");
    for (size_t i = 0; i < n; i++) {
        FZ_CHECK(header_eq(&whole.frames[i].h, &want[i].h), "round trip header %zu", i);
        FZ_CHECK(whole.frames[i].message_opcode == want[i].message_opcode &&
                     whole.frames[i].message_start == want[i].message_start,
                 "round trip message fields %zu", i);
    }
    log_free(&whole);
    log_free(&split);
    free(want);
    free(wire);
    free(payloads);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_reader r = {data, size};
    uint8_t flags = fz_u8(&r);
    uint8_t limit = fz_u8(&r);
    fz_rng rng = {fz_u32(&r)};
    parse_cfg c = {(flags & 1) ? CWS_ROLE_CLIENT : CWS_ROLE_SERVER, (uint8_t)((flags >> 1) & 7),
                   limit ? (uint64_t)limit * limit : 0};
    if (flags & 0x10) {
        round_trip(&c, &r, &rng);
        return 0;
    }
    parse_log whole, split, bytewise;
    run_parser(&c, r.p, r.len, NULL, 0, &whole);
    run_parser(&c, r.p, r.len, &rng, 0, &split);
    logs_equal(&whole, &split, "whole vs split");
    /* One byte at a time: the slow header path for every header. */
    run_parser(&c, r.p, r.len, NULL, 1, &bytewise);
    logs_equal(&whole, &bytewise, "whole vs byte by byte");
    log_free(&bytewise);
    /* Encoding arbitrary reasons: truncation keeps text valid. */
    if (r.len >= 2) check_close_encode(r.p + 2, r.len - 2, (uint16_t)(r.p[0] << 8 | r.p[1]));
    log_free(&whole);
    log_free(&split);
    return 0;
}
