/*
 * The HTTP/1.1 opening handshake (RFC 6455 section 4, RFC 9112 for the
 * message syntax): an incremental request-head parser, the upgrade checks and
 * the response writers. Sans-IO: the caller owns the buffer and the socket.
 *
 * Line endings: a line ends at LF, and a CR right before that LF belongs to
 * the line ending. So CRLF and bare LF (RFC 9112 section 2.2 lets a recipient
 * accept it) are treated the same, also for the blank line that ends the
 * head ("\r\n\r\n", "\n\n", "\r\n\n" and "\n\r\n" all end it). A CR anywhere
 * else is a control character and makes the head malformed.
 *
 * Strictness: everything RFC 9112 lets a server reject is rejected with 400
 * rather than guessed at: obs-fold lines, whitespace before a header colon,
 * more than one space between request-line parts, control characters and NUL,
 * leading blank lines before the request line.
 */
#include "cws_internal.h"

#include <stdlib.h>
#include <string.h>

/* max_head 0 would reject everything; read it as "use a sane default". */
#define CWS_HTTP_DEFAULT_MAX_HEAD 8192

static const char cws_ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* ---- character classes (RFC 9110 section 5.6.2) ---- */

static int cws_is_tchar(unsigned char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
        return 1;
    default:
        return 0;
    }
}

static int cws_is_ows(unsigned char c) { return c == ' ' || c == '\t'; }

/* field-content: VCHAR, obs-text, SP, HTAB. Everything else is a control. */
static int cws_is_field_char(unsigned char c) { return c >= 0x20 ? c != 0x7F : c == '\t'; }

static unsigned char cws_lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c; }

static int cws_ieq(const char *a, size_t a_len, const char *b, size_t b_len) {
    if (a_len != b_len) return 0;
    for (size_t i = 0; i < a_len; i++) {
        if (cws_lower((unsigned char)a[i]) != cws_lower((unsigned char)b[i])) return 0;
    }
    return 1;
}

static int cws_slice_ieq(cws_slice s, const char *lit) { return cws_ieq(s.ptr, s.len, lit, strlen(lit)); }

/* ---- incremental head scan ---- */

void cws_http_request_init(cws_http_request *r, size_t max_head) {
    memset(r, 0, sizeof *r);
    r->max_head = max_head ? max_head : CWS_HTTP_DEFAULT_MAX_HEAD;
}

/* The LF at lf ends an empty line, that is, the blank line closing the head. */
static int cws_ends_blank_line(const uint8_t *p, size_t lf) {
    if (lf == 0 || p[lf - 1] == '\n') return 1;
    return p[lf - 1] == '\r' && (lf == 1 || p[lf - 2] == '\n');
}

/* Start of the next line after pos, and the end of this line's content
 * (before the CR LF or LF). The head is known to contain the LF. */
static size_t cws_next_line(const uint8_t *p, size_t pos, size_t end, size_t *content_end) {
    const uint8_t *lf = memchr(p + pos, '\n', end - pos);
    size_t e = (size_t)(lf - p);
    *content_end = e > pos && p[e - 1] == '\r' ? e - 1 : e;
    return e + 1;
}

/* Request-target: origin-form ("/path?query") or absolute-form
 * ("scheme://authority/path?query", RFC 9112 section 3.2.2). For the latter,
 * path is the path component, so routing does not depend on the form. */
static int cws_parse_target(cws_http_request *r, const char *t, size_t len) {
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c <= 0x20 || c >= 0x7F) return 0; /* RFC 3986 allows none of these */
    }
    size_t path_start = 0;
    if (t[0] != '/') {
        size_t i = 0;
        unsigned char c0 = (unsigned char)t[0];
        if (!((c0 >= 'a' && c0 <= 'z') || (c0 >= 'A' && c0 <= 'Z'))) return 0;
        while (i < len) {
            unsigned char c = (unsigned char)t[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' ||
                  c == '-' || c == '.'))
                break;
            i++;
        }
        if (len - i < 3 || memcmp(t + i, "://", 3) != 0) return 0;
        i += 3;
        while (i < len && t[i] != '/' && t[i] != '?') i++;
        path_start = i;
    }
    r->target = (cws_slice){t, len};
    const char *q = memchr(t + path_start, '?', len - path_start);
    size_t path_end = q ? (size_t)(q - t) : len;
    if (path_end > path_start) {
        r->path = (cws_slice){t + path_start, path_end - path_start};
    } else {
        /* "http://host" or "http://host?x": the path is "/" (RFC 9112 3.3). */
        r->path = (cws_slice){"/", 1};
    }
    if (q) r->query = (cws_slice){q + 1, len - path_end - 1};
    return 1;
}

/* method SP request-target SP HTTP-version, single spaces only. */
static int cws_parse_request_line(cws_http_request *r, const char *s, size_t len) {
    size_t i = 0;
    while (i < len && cws_is_tchar((unsigned char)s[i])) i++;
    if (i == 0 || i == len || s[i] != ' ') return 0;
    r->method = (cws_slice){s, i};

    size_t t0 = ++i;
    while (i < len && s[i] != ' ') i++;
    if (i == t0 || i == len) return 0;
    if (!cws_parse_target(r, s + t0, i - t0)) return 0;

    const char *v = s + i + 1;
    size_t v_len = len - i - 1;
    if (v_len != 8 || memcmp(v, "HTTP/1.", 7) != 0 || v[7] < '0' || v[7] > '9') return 0;
    r->http_major = 1;
    r->http_minor = (uint8_t)(v[7] - '0');
    return 1;
}

/* name ":" OWS value OWS. Returns 0 or -400. */
static long cws_parse_header_line(cws_http_header *h, const char *s, size_t len) {
    size_t i = 0;
    /* A leading SP/HTAB is obs-fold or whitespace before the name: neither is a tchar. */
    while (i < len && cws_is_tchar((unsigned char)s[i])) i++;
    if (i == 0 || i == len || s[i] != ':') return CWS_HTTP_BAD_REQUEST;
    h->name = (cws_slice){s, i};

    size_t v0 = i + 1, v1 = len;
    for (size_t j = v0; j < v1; j++) {
        if (!cws_is_field_char((unsigned char)s[j])) return CWS_HTTP_BAD_REQUEST;
    }
    while (v0 < v1 && cws_is_ows((unsigned char)s[v0])) v0++;
    while (v1 > v0 && cws_is_ows((unsigned char)s[v1 - 1])) v1--;
    h->value = (cws_slice){s + v0, v1 - v0};
    return 0;
}

/* The whole head p[0..end) is present and ends with the blank line. */
static long cws_parse_head(cws_http_request *r, const uint8_t *p, size_t end) {
    const char *s = (const char *)p;
    r->method = r->target = r->path = r->query = (cws_slice){NULL, 0};
    r->header_count = 0;

    size_t content_end;
    size_t pos = cws_next_line(p, 0, end, &content_end);
    if (!cws_parse_request_line(r, s, content_end)) return CWS_HTTP_BAD_REQUEST;

    for (;;) {
        size_t line = pos;
        pos = cws_next_line(p, line, end, &content_end);
        if (content_end == line) break; /* the blank line: the scan put it last */
        if (r->header_count == CWS_HTTP_MAX_HEADERS) return CWS_HTTP_HEAD_TOO_LARGE;
        long rc = cws_parse_header_line(&r->headers[r->header_count], s + line, content_end - line);
        if (rc < 0) return rc;
        r->header_count++;
    }
    return (long)end;
}

long cws_http_parse(cws_http_request *r, const void *buf, size_t len) {
    if (r->head_len) return (long)r->head_len;
    const uint8_t *p = (const uint8_t *)buf;
    size_t limit = len < r->max_head ? len : r->max_head;
    /* Resume where the last call stopped: each byte is looked at once. The
     * blank-line test looks back at most two bytes, which are still there. */
    size_t i = r->scanned;
    while (i < limit) {
        const uint8_t *lf = memchr(p + i, '\n', limit - i);
        if (!lf) {
            i = limit;
            break;
        }
        i = (size_t)(lf - p);
        if (cws_ends_blank_line(p, i)) {
            /* Leave scanned at the LF: after an error, calling again finds
             * the same head and returns the same error. */
            r->scanned = i;
            long rc = cws_parse_head(r, p, i + 1);
            if (rc > 0) r->head_len = (size_t)rc;
            return rc;
        }
        i++;
    }
    if (i > r->scanned) r->scanned = i;
    return len >= r->max_head ? CWS_HTTP_HEAD_TOO_LARGE : 0;
}

cws_slice cws_http_header_get(const cws_http_request *r, const char *name) {
    size_t n = strlen(name);
    for (uint16_t i = 0; i < r->header_count; i++) {
        const cws_http_header *h = &r->headers[i];
        if (cws_ieq(h->name.ptr, h->name.len, name, n)) return h->value;
    }
    return (cws_slice){NULL, 0};
}

/* ---- upgrade checks ---- */

/* 1 if a comma-separated list (RFC 9110 section 5.6.1: OWS around elements,
 * empty elements allowed) has an element equal to token, case-insensitively. */
static int cws_list_has_token(cws_slice list, const char *token) {
    size_t tlen = strlen(token);
    size_t i = 0;
    while (i <= list.len) {
        size_t start = i;
        while (i < list.len && list.ptr[i] != ',') i++;
        size_t a = start, b = i;
        while (a < b && cws_is_ows((unsigned char)list.ptr[a])) a++;
        while (b > a && cws_is_ows((unsigned char)list.ptr[b - 1])) b--;
        if (cws_ieq(list.ptr + a, b - a, token, tlen)) return 1;
        i++; /* past the comma (or past the end, which ends the loop) */
    }
    return 0;
}

int cws_http_is_upgrade(const cws_http_request *r) {
    for (uint16_t i = 0; i < r->header_count; i++) {
        const cws_http_header *h = &r->headers[i];
        if (cws_slice_ieq(h->name, "sec-websocket-key")) return 1;
        if (cws_slice_ieq(h->name, "upgrade") && cws_list_has_token(h->value, "websocket")) return 1;
    }
    return 0;
}

/*
 * Checks run in the order below, so a request with several faults gets the
 * first one's status. The version is checked before the key: a client of
 * another protocol version learns which one we speak (RFC 6455 section 4.4)
 * even if its key looks different.
 */
int cws_upgrade_validate(const cws_http_request *r, cws_upgrade_info *info) {
    memset(info, 0, sizeof *info);
    int hosts = 0, keys = 0, versions = 0, connection_upgrade = 0, upgrade_websocket = 0;
    cws_slice version = {NULL, 0};

    for (uint16_t i = 0; i < r->header_count; i++) {
        const cws_http_header *h = &r->headers[i];
        cws_slice n = h->name;
        if (cws_slice_ieq(n, "host")) {
            if (hosts++ == 0) info->host = h->value;
        } else if (cws_slice_ieq(n, "connection")) {
            connection_upgrade |= cws_list_has_token(h->value, "upgrade");
        } else if (cws_slice_ieq(n, "upgrade")) {
            upgrade_websocket |= cws_list_has_token(h->value, "websocket");
        } else if (cws_slice_ieq(n, "sec-websocket-key")) {
            if (keys++ == 0) info->key = h->value;
        } else if (cws_slice_ieq(n, "sec-websocket-version")) {
            if (versions++ == 0) version = h->value;
        } else if (cws_slice_ieq(n, "origin")) {
            if (!info->origin.ptr) info->origin = h->value;
        } else if (cws_slice_ieq(n, "sec-websocket-protocol")) {
            if (!info->protocols.ptr) info->protocols = h->value;
        } else if (cws_slice_ieq(n, "sec-websocket-extensions")) {
            if (info->extension_headers++ == 0) info->extensions = h->value;
        } else if (cws_slice_ieq(n, "cookie")) {
            if (!info->cookie.ptr) info->cookie = h->value;
        }
    }

    int status = 0;
    /* The method is case-sensitive (RFC 9110 section 9.1). */
    if (r->method.len != 3 || memcmp(r->method.ptr, "GET", 3) != 0) status = 405;
    else if (r->http_major < 1 || (r->http_major == 1 && r->http_minor < 1)) status = 400;
    /* RFC 9112 section 3.2: missing or repeated Host is a 400. A ws:// URI
     * always has a host, so an empty value is not allowed either. */
    else if (hosts != 1 || info->host.len == 0) status = 400;
    else if (!connection_upgrade) status = 400;
    else if (!upgrade_websocket) status = 400;
    else if (versions != 1 || !(version.len == 2 && memcmp(version.ptr, "13", 2) == 0)) status = 426;
    else if (keys != 1) status = 400;
    else {
        uint8_t nonce[18]; /* room for 17 so a 17-byte key decodes and is refused */
        if (cws_base64_decode(info->key.ptr, info->key.len, nonce, sizeof nonce) != 16) status = 400;
    }
    if (status) {
        memset(info, 0, sizeof *info);
        return status;
    }
    return 0;
}

/* ---- responses ---- */

void cws_accept_key(const void *key, size_t key_len, char out[28]) {
    /* Valid keys are 24 characters; the heap path only serves odd callers. */
    uint8_t stack[256];
    size_t total = key_len + sizeof cws_ws_guid - 1;
    uint8_t *msg = total <= sizeof stack ? stack : malloc(total);
    uint8_t digest[20];
    if (!msg) {
        memset(out, '=', 28);
        return;
    }
    if (key_len) memcpy(msg, key, key_len);
    memcpy(msg + key_len, cws_ws_guid, sizeof cws_ws_guid - 1);
    cws_sha1(msg, total, digest);
    if (msg != stack) free(msg);
    cws_base64_encode(digest, sizeof digest, out);
}

/* Appends into a fixed buffer; once something does not fit, stays failed. */
typedef struct cws_writer {
    char *out;
    size_t cap;
    size_t len;
    int overflow;
} cws_writer;

static void cws_put(cws_writer *w, const void *s, size_t n) {
    if (w->overflow || n > w->cap - w->len) {
        w->overflow = 1;
        return;
    }
    memcpy(w->out + w->len, s, n);
    w->len += n;
}

static void cws_puts(cws_writer *w, const char *s) { cws_put(w, s, strlen(s)); }

static size_t cws_finish(const cws_writer *w) { return w->overflow ? 0 : w->len; }

size_t cws_upgrade_response(void *out, size_t cap, const void *key, size_t key_len,
                            const char *protocol, const char *extensions) {
    char accept[28];
    cws_accept_key(key, key_len, accept);
    cws_writer w = {(char *)out, cap, 0, 0};
    cws_puts(&w, "HTTP/1.1 101 Switching Protocols\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: ");
    cws_put(&w, accept, sizeof accept);
    cws_puts(&w, "\r\n");
    if (protocol && *protocol) {
        cws_puts(&w, "Sec-WebSocket-Protocol: ");
        cws_puts(&w, protocol);
        cws_puts(&w, "\r\n");
    }
    if (extensions && *extensions) {
        cws_puts(&w, "Sec-WebSocket-Extensions: ");
        cws_puts(&w, extensions);
        cws_puts(&w, "\r\n");
    }
    cws_puts(&w, "\r\n");
    return cws_finish(&w);
}

const char *cws_http_reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 421: return "Misdirected Request";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: break;
    }
    /* The phrase is informational only (RFC 9112 section 4): the class's name. */
    switch (status / 100) {
    case 1: return "Informational";
    case 2: return "Success";
    case 3: return "Redirection";
    case 4: return "Client Error";
    default: return "Server Error";
    }
}

/* No body: the status says it all, and the connection closes after it. */
size_t cws_http_error_response(void *out, size_t cap, int status) {
    if (status < 100 || status > 999) status = 500;
    char line[16] = "HTTP/1.1 ";
    line[9] = (char)('0' + status / 100);
    line[10] = (char)('0' + status / 10 % 10);
    line[11] = (char)('0' + status % 10);
    line[12] = ' ';
    cws_writer w = {(char *)out, cap, 0, 0};
    cws_put(&w, line, 13);
    cws_puts(&w, cws_http_reason(status));
    cws_puts(&w, "\r\n");
    if (status == 426) cws_puts(&w, "Sec-WebSocket-Version: 13\r\n");
    if (status == 405) cws_puts(&w, "Allow: GET\r\n");
    cws_puts(&w, "Connection: close\r\nContent-Length: 0\r\n\r\n");
    return cws_finish(&w);
}
