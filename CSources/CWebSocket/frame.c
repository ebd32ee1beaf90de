/*
 * RFC 6455 framing: a streaming, sans-IO parser and the encoder.
 *
 * The parser validates each header as soon as it is complete, so a bad frame
 * fails before its payload is read; payload bytes are unmasked in place and
 * returned as they arrive, so a large frame never has to be buffered here.
 */
#include "cws_internal.h"

#include <string.h>

static inline int cws_is_control(uint8_t opcode) { return opcode >= 0x8; }

static inline int cws_opcode_known(uint8_t opcode) {
    return opcode <= CWS_OP_BINARY || (opcode >= CWS_OP_CLOSE && opcode <= CWS_OP_PONG);
}

/* Header length implied by its first two bytes. */
static inline size_t cws_header_len_from(uint8_t b1) {
    uint8_t len7 = b1 & 0x7F;
    size_t n = 2 + ((b1 & 0x80) ? 4 : 0);
    if (len7 == 126) n += 2;
    else if (len7 == 127) n += 8;
    return n;
}

int cws_frame_header_decode(const void *buf, size_t len, cws_frame_header *out) {
    const uint8_t *b = buf;
    if (len < 2) return 0;
    size_t need = cws_header_len_from(b[1]);
    if (len < need) return 0;

    uint8_t len7 = b[1] & 0x7F;
    uint64_t plen = len7;
    size_t pos = 2;
    if (len7 == 126) {
        plen = ((uint64_t)b[2] << 8) | b[3];
        pos = 4;
    } else if (len7 == 127) {
        plen = 0;
        for (int i = 0; i < 8; i++) plen = (plen << 8) | b[2 + i];
        pos = 10;
        /* The most significant bit MUST be 0 (section 5.2). */
        if (plen >> 63) return -CWS_CLOSE_PROTOCOL_ERROR;
    }
    out->fin = b[0] >> 7;
    out->rsv = (b[0] >> 4) & 0x7;
    out->opcode = b[0] & 0xF;
    out->masked = b[1] >> 7;
    out->payload_len = plen;
    out->mask_key = 0;
    if (out->masked) memcpy(&out->mask_key, b + pos, 4);
    out->header_len = (uint8_t)need;
    return (int)need;
}

/* Rules that need the parser's role, extensions and message state. Returns 0
 * or the close code to fail with; updates the message state on success. */
static int cws_check_header(cws_parser *p, const cws_frame_header *h) {
    if (!cws_opcode_known(h->opcode)) return CWS_CLOSE_PROTOCOL_ERROR;
    if (h->masked != (p->role == CWS_ROLE_SERVER)) return CWS_CLOSE_PROTOCOL_ERROR;
    if (h->rsv) {
        /* An extension's bit is only meaningful on the first frame of a data
         * message (RFC 7692 section 6: RSV1 on a continuation is an error). */
        int first_data = h->opcode == CWS_OP_TEXT || h->opcode == CWS_OP_BINARY;
        if (!first_data || (h->rsv & ~p->rsv_allowed)) return CWS_CLOSE_PROTOCOL_ERROR;
    }
    if (cws_is_control(h->opcode)) {
        if (!h->fin || h->payload_len > 125) return CWS_CLOSE_PROTOCOL_ERROR;
        return 0;
    }
    if (h->opcode == CWS_OP_CONTINUATION) {
        if (!p->in_message) return CWS_CLOSE_PROTOCOL_ERROR;
    } else if (p->in_message) {
        return CWS_CLOSE_PROTOCOL_ERROR;
    }
    if (p->max_frame_payload && h->payload_len > p->max_frame_payload) return CWS_CLOSE_MESSAGE_TOO_BIG;
    if (h->opcode != CWS_OP_CONTINUATION) p->message_opcode = h->opcode;
    p->in_message = !h->fin;
    return 0;
}

void cws_parser_init(cws_parser *p, cws_role role, uint64_t max_frame_payload) {
    memset(p, 0, sizeof *p);
    p->role = (uint8_t)role;
    p->max_frame_payload = max_frame_payload;
}

static int cws_parser_fail(cws_parser *p, int code, size_t used, size_t *consumed) {
    p->failed_code = (uint16_t)code;
    *consumed = used;
    return -code;
}

int cws_parse(cws_parser *p, void *buf, size_t len, size_t *consumed, cws_frame_event *ev) {
    uint8_t *b = buf;
    size_t used = 0;
    int frame_start = 0;

    if (CWS_UNLIKELY(p->failed_code)) {
        *consumed = 0;
        return -(int)p->failed_code;
    }
    if (!p->in_payload) {
        cws_frame_header h;
        int r;
        if (p->header_have == 0) {
            /* Fast path: the whole header is in the caller's buffer. */
            r = cws_frame_header_decode(b, len, &h);
            /* A header that fails to decode is consumed too (see *consumed
             * in cwebsocket.h), as it is when it arrives byte by byte. */
            if (r != 0) used = cws_header_len_from(b[1]);
        } else {
            r = 0;
        }
        if (r == 0) {
            /* Slow path: gather the header byte by byte across calls. */
            while (used < len) {
                p->header_buf[p->header_have++] = b[used++];
                if (p->header_have >= 2 && p->header_have == cws_header_len_from(p->header_buf[1])) break;
            }
            r = cws_frame_header_decode(p->header_buf, p->header_have, &h);
            if (r == 0) {
                *consumed = used;
                return CWS_PARSE_NEED_MORE;
            }
        }
        if (r < 0) return cws_parser_fail(p, -r, used, consumed);
        int code = cws_check_header(p, &h);
        if (code) return cws_parser_fail(p, code, used, consumed);
        p->frame = h;
        p->header_have = 0;
        p->payload_done = 0;
        p->in_payload = 1;
        frame_start = 1;
    } else if (len == 0) {
        *consumed = 0;
        return CWS_PARSE_NEED_MORE;
    }

    const cws_frame_header *h = &p->frame;
    uint64_t remaining = h->payload_len - p->payload_done;
    size_t avail = len - used;
    size_t n = remaining < avail ? (size_t)remaining : avail;
    uint8_t *payload = b + used;
    if (h->masked && n) cws_mask(payload, n, h->mask_key, (size_t)p->payload_done);

    ev->header = *h;
    ev->payload = payload;
    ev->payload_len = n;
    ev->payload_offset = p->payload_done;
    ev->frame_start = (uint8_t)frame_start;
    p->payload_done += n;
    ev->frame_end = p->payload_done == h->payload_len;
    if (cws_is_control(h->opcode)) {
        ev->message_opcode = h->opcode;
        ev->message_start = 0;
    } else {
        ev->message_opcode = p->message_opcode;
        ev->message_start = (uint8_t)(frame_start && h->opcode != CWS_OP_CONTINUATION);
    }
    if (ev->frame_end) p->in_payload = 0;
    *consumed = used + n;
    return CWS_PARSE_EVENT;
}

size_t cws_frame_header_size(uint64_t payload_len, uint8_t masked) {
    size_t n = payload_len < 126 ? 2 : payload_len <= 0xFFFF ? 4 : 10;
    return n + (masked ? 4 : 0);
}

size_t cws_frame_header_encode(void *out, uint8_t fin, uint8_t rsv, uint8_t opcode,
                               uint64_t payload_len, uint8_t masked, uint32_t mask_key) {
    uint8_t *o = out;
    size_t pos;
    o[0] = (uint8_t)((fin ? 0x80 : 0) | ((rsv & 0x7) << 4) | (opcode & 0xF));
    uint8_t mbit = masked ? 0x80 : 0;
    if (payload_len < 126) {
        o[1] = mbit | (uint8_t)payload_len;
        pos = 2;
    } else if (payload_len <= 0xFFFF) {
        o[1] = mbit | 126;
        o[2] = (uint8_t)(payload_len >> 8);
        o[3] = (uint8_t)payload_len;
        pos = 4;
    } else {
        o[1] = mbit | 127;
        for (int i = 0; i < 8; i++) o[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
        pos = 10;
    }
    if (masked) {
        memcpy(o + pos, &mask_key, 4);
        pos += 4;
    }
    return pos;
}

size_t cws_frame_encode(void *out, uint8_t fin, uint8_t rsv, uint8_t opcode,
                        const void *payload, size_t len, uint8_t masked, uint32_t mask_key) {
    uint8_t *o = out;
    size_t h = cws_frame_header_encode(o, fin, rsv, opcode, len, masked, mask_key);
    if (len) {
        if (masked) cws_mask_copy(o + h, payload, len, mask_key, 0);
        else memmove(o + h, payload, len);
    }
    return h + len;
}

int cws_close_code_valid(uint32_t code) {
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

int cws_close_payload_parse(const void *payload, size_t len, uint16_t *code,
                            const uint8_t **reason, size_t *reason_len) {
    const uint8_t *b = payload;
    *reason = NULL;
    *reason_len = 0;
    if (len == 0) {
        *code = CWS_CLOSE_NO_STATUS;
        return 0;
    }
    if (len == 1) return CWS_CLOSE_PROTOCOL_ERROR;
    uint16_t c = (uint16_t)((b[0] << 8) | b[1]);
    if (!cws_close_code_valid(c)) return CWS_CLOSE_PROTOCOL_ERROR;
    if (cws_utf8_validate(b + 2, len - 2, NULL) != 0) return CWS_CLOSE_INVALID_PAYLOAD;
    *code = c;
    *reason = b + 2;
    *reason_len = len - 2;
    return 0;
}

size_t cws_close_payload_encode(void *out, uint16_t code, const void *reason, size_t reason_len) {
    uint8_t *o = out;
    if (code == 0) return 0;
    o[0] = (uint8_t)(code >> 8);
    o[1] = (uint8_t)code;
    if (reason_len > 123) {
        /* Cut at a character boundary so the truncated reason stays UTF-8. */
        const uint8_t *r = reason;
        reason_len = 123;
        while (reason_len && (r[reason_len] & 0xC0) == 0x80) reason_len--;
    }
    if (reason_len) memcpy(o + 2, reason, reason_len);
    return 2 + reason_len;
}
