/*
 * The request head: parsing it, the application's decision (accept the
 * upgrade or respond), the 101 and plain HTTP answers.
 */
#include "engine_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>

/* ---- input: the request head -------------------------------------------- */


void cws_conn_open(cws_loop *l, cws_conn *c) {
    c->flags |= CWS_CF_OPENED;
    CWS_STAT_ADD(l, connections, 1);
    const cws_server_config *cfg = &l->srv->cfg;
    c->active_tick = l->tick;
    if (cfg->idle_timeout_ms) cws_timer_set(l, c, cfg->idle_timeout_ms);
    else cws_timer_clear(l, c);
    const cws_callbacks *cb = &cfg->callbacks;
    if (cb->on_open) cb->on_open(cb->ctx, cws_conn_id_of(l, c), c->user);
}

void cws_conn_close_after_queue(cws_loop *l, cws_conn *c) {
    c->state = CWS_CONN_CLOSING;
    c->flags |= CWS_CF_SHUT_AFTER | CWS_CF_READ_DONE | CWS_CF_CLOSE_SENT;
    cws_timer_set(l, c, l->srv->cfg.close_timeout_ms);
}

void cws_conn_answer_msg(cws_loop *l, cws_conn *c, cws_msg *m) {
    cws_conn_close_after_queue(l, c);
    if (cws_sendq_push(l, c, m) < 0) cws_conn_finish(l, c);
}

void cws_conn_answer(cws_loop *l, cws_conn *c, const void *bytes, size_t len) {
    cws_msg *m = cws_msg_alloc(len);
    if (!m) {
        cws_conn_finish(l, c);
        return;
    }
    memcpy(m->data, bytes, len);
    cws_conn_answer_msg(l, c, m);
    cws_msg_release(m);
}

void cws_conn_http_error(cws_loop *l, cws_conn *c, int status) {
    char buf[192];
    size_t n = cws_http_error_response(buf, sizeof buf, status);
    cws_conn_answer(l, c, buf, n);
}

/* WebSocket connections open on every loop, and upgrades waiting for a
 * deferred answer: each may become one, and counting them only once
 * accepted would let a burst of slow decisions all pass the cap (each
 * loop's count is exact; the sum may lag by the upgrades other loops are
 * accepting right now). */
static uint64_t cws_server_open_connections(const cws_server *s) {
    uint64_t n = 0;
    for (uint32_t i = 0; i < s->nloops; i++)
        n += atomic_load_explicit(&s->loops[i].stats.connections, memory_order_relaxed) +
             atomic_load_explicit(&s->loops[i].stats.deferred, memory_order_relaxed);
    return n;
}

/* What RFC 9112 requires of any request before the application sees it (an
 * upgrade's own rules are cws_upgrade_validate's): a Host header, exactly one
 * in HTTP/1.1 and at most one in 1.0. */
static int cws_plain_request_error(const cws_http_request *r) {
    int hosts = 0;
    for (uint16_t i = 0; i < r->header_count; i++) {
        const cws_slice *n = &r->headers[i].name;
        if (n->len == 4 && !strncasecmp((const char *)n->ptr, "host", 4)) hosts++;
    }
    if (hosts > 1 || (r->http_minor == 1 && hosts == 0)) return 400;
    return 0;
}

/* Handles the complete head just parsed into l->http (rest: what followed
 * it); returns 1 if the connection is now open. */
static int cws_conn_request(cws_loop *l, cws_conn *c, uint8_t *rest0, size_t len0, uint8_t *rest1, size_t len1) {
    cws_http_request *r = &l->http;
    cws_upgrade_info info;
    const cws_upgrade_info *up = NULL;
    if (r->http_major != 1 || r->http_minor > 1) {
        CWS_STAT_ADD(l, handshakes_failed, 1);
        cws_conn_http_error(l, c, 505); /* HTTP/1.9 is no HTTP we speak */
        return 0;
    }
    if (cws_http_is_upgrade(r)) {
        int status = cws_upgrade_validate(r, &info);
        if (status) {
            CWS_STAT_ADD(l, handshakes_failed, 1);
            cws_conn_http_error(l, c, status);
            return 0;
        }
        if (cws_server_open_connections(l->srv) >= l->srv->cfg.max_connections) {
            /* Refused while there are descriptors to say so: a client told
             * when to come back does not hammer a full server. */
            static const char full[] = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n"
                                       "Connection: close\r\nContent-Length: 0\r\n\r\n";
            CWS_STAT_ADD(l, refused_full, 1);
            cws_conn_answer(l, c, full, sizeof full - 1);
            return 0;
        }
        up = &info;
    }
    int status = up ? 0 : cws_plain_request_error(r);
    if (status) {
        cws_conn_http_error(l, c, status);
        return 0;
    }
    cws_request req = {.loop = l, .conn = c, .upgrade = up,
                       .head_only = r->method.len == 4 && !memcmp(r->method.ptr, "HEAD", 4),
                       .rest = {rest0, rest1}, .rest_len = {len0, len1}};
    const cws_callbacks *cb = &l->srv->cfg.callbacks;
    if (cb->on_request) cb->on_request(cb->ctx, &req, r, up);
    if (!req.answered) {
        cws_conn_http_error(l, c, 404);
        return 0;
    }
    /* Deferred: the rest was copied into the record; it waits for the answer. */
    if (!req.accepted || req.deferred) return 0;
    cws_conn_open(l, c);
    return c->state == CWS_CONN_OPEN || c->state == CWS_CONN_CLOSING;
}

static void cws_conn_handshake_input(cws_loop *l, cws_conn *c, uint8_t *data, size_t len) {
    uint32_t max_head = l->srv->cfg.max_head_size;
    const uint8_t *head;
    size_t have, taken;
    if (!c->rlen) {
        /* Common case: the whole head came in one read; parse it in place. */
        head = data;
        have = len;
        taken = len;
    } else {
        size_t room = max_head > c->rlen ? max_head - c->rlen : 0;
        taken = len < room ? len : room;
        if (cws_rbuf_reserve(c, taken) < 0) {
            cws_conn_finish(l, c);
            return;
        }
        memcpy(c->rbuf + c->rlen, data, taken);
        c->rlen += (uint32_t)taken;
        head = c->rbuf;
        have = c->rlen;
    }
    cws_http_request *r = &l->http;
    cws_http_request_init(r, max_head);
    long rc = cws_http_parse(r, head, have);
    if (rc == 0) {
        if (head == data) {
            if (cws_rbuf_reserve(c, len) < 0) {
                cws_conn_finish(l, c);
                return;
            }
            memcpy(c->rbuf, data, len);
            c->rlen = (uint32_t)len;
        }
        return;
    }
    if (rc < 0) {
        CWS_STAT_ADD(l, handshakes_failed, 1);
        cws_conn_http_error(l, c, (int)-rc);
        return;
    }
    /* Bytes after the head (a client that did not wait for the 101). The
     * head buffer is detached first: rbuf becomes the reassembly buffer. */
    size_t head_len = (size_t)rc;
    uint8_t *held = c->rbuf;
    c->rbuf = NULL;
    c->rlen = c->rcap = 0;
    size_t rest0 = head_len < have ? have - head_len : 0, rest1 = taken < len ? len - taken : 0;
    int open = cws_conn_request(l, c, (uint8_t *)head + head_len, rest0, data + taken, rest1);
    if (open && head_len < have) cws_conn_frames(l, c, (uint8_t *)head + head_len, have - head_len);
    if (open && taken < len && c->state != CWS_CONN_DEAD) cws_conn_frames(l, c, data + taken, len - taken);
    free(held);
}

void cws_conn_input(cws_loop *l, cws_conn *c, uint8_t *data, size_t len) {
    if (c->tls) cws_tls_input(l, c, data, len);
    else cws_conn_plaintext(l, c, data, len);
}

void cws_conn_plaintext(cws_loop *l, cws_conn *c, uint8_t *data, size_t len) {
    switch (c->state) {
    case CWS_CONN_HANDSHAKE:
        cws_conn_handshake_input(l, c, data, len);
        break;
    case CWS_CONN_OPEN:
    case CWS_CONN_CLOSING:
        cws_conn_frames(l, c, data, len);
        break;
    case CWS_CONN_DEFERRED:
        cws_deferred_input(l, c, data, len);
        break;
    default:
        break; /* draining: discard */
    }
}

void cws_conn_eof(cws_loop *l, cws_conn *c, int err) {
    if (!err) cws_tls_truncated(l, c);
    cws_conn_finish(l, c);
}

/* ---- requests ----------------------------------------------------------- */

cws_msg *cws_http_response_msg(int status, const char *content_type, const char *headers, const void *body,
                               size_t body_len, int head_only) {
    if (status < 100 || status > 999) status = 500;
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\n%s%s%sContent-Length: %zu\r\nConnection: close\r\n",
                     status, cws_http_reason(status), content_type ? "Content-Type: " : "",
                     content_type ? content_type : "", content_type ? "\r\n" : "", body_len);
    if (n < 0 || (size_t)n >= sizeof head) n = 0;
    size_t hl = headers ? strlen(headers) : 0;
    size_t total = (size_t)n + hl + 2 + body_len;
    cws_msg *m = cws_msg_alloc(total);
    if (!m) return NULL;
    uint8_t *o = m->data;
    memcpy(o, head, (size_t)n);
    o += n;
    if (hl) memcpy(o, headers, hl), o += hl;
    memcpy(o, "\r\n", 2), o += 2;
    if (body_len && !head_only) memcpy(o, body, body_len);
    else m->len -= body_len; /* HEAD: the headers of the GET, Content-Length included */
    return m;
}

void cws_request_respond(cws_request *req, int status, const char *content_type,
                         const char *headers, const void *body, size_t body_len) {
    if (!req || req->answered) return;
    req->answered = 1;
    cws_msg *m = cws_http_response_msg(status, content_type, headers, body, body_len, req->head_only);
    if (!m) {
        cws_conn_finish(req->loop, req->conn);
        return;
    }
    cws_conn_answer_msg(req->loop, req->conn, m);
    cws_msg_release(m);
}

int cws_conn_upgrade(cws_loop *l, cws_conn *c, const void *key, size_t key_len, const char *protocol,
                     const char *ext, const cws_deflate_params *dp, void *user) {
    int deflate = ext && *ext;
    if (deflate && !cws_conn_cold_get(c)) return -1; /* where its window bits and contexts live */
    size_t cap = 256 + (protocol ? strlen(protocol) : 0) + (deflate ? strlen(ext) : 0);
    cws_msg *m = cws_msg_alloc(cap);
    if (!m) return -1;
    m->len = cws_upgrade_response(m->data, cap, key, key_len, protocol, deflate ? ext : NULL);
    if (!m->len || cws_sendq_push(l, c, m) < 0) {
        cws_msg_release(m);
        return -1;
    }
    cws_msg_release(m);
    /* Most connections are quiet after their 101: the ring that carried it
     * goes once it is written, unless more was queued behind it. */
    if (c->qcount == 1) c->flags |= CWS_CF_QONCE;
    c->user = user;
    c->state = CWS_CONN_OPEN;
    cws_parser_init(&c->parser, CWS_ROLE_SERVER, l->srv->cfg.max_message_size);
    if (deflate) {
        c->pmd = (uint8_t)(CWS_PMD_ON | (dp->server_no_context_takeover ? CWS_PMD_SERVER_NCT : 0) |
                           (dp->client_no_context_takeover ? CWS_PMD_CLIENT_NCT : 0));
        c->cold->z_sbits = dp->server_max_window_bits;
        c->cold->z_cbits = dp->client_max_window_bits;
        c->parser.rsv_allowed = CWS_RSV1;
    }
    return 0;
}

cws_conn_id cws_request_accept(cws_request *req, const char *protocol, void *user) {
    if (!req || req->answered || !req->upgrade) return 0;
    cws_loop *l = req->loop;
    char ext[CWS_DEFLATE_RESPONSE_MAX];
    cws_deflate_params dp;
    int el = cws_deflate_negotiate_request(&l->srv->cfg.deflate, &l->http, &dp, ext, sizeof ext);
    if (cws_conn_upgrade(l, req->conn, req->upgrade->key.ptr, req->upgrade->key.len, protocol, el > 0 ? ext : NULL,
                         &dp, user) < 0)
        return 0;
    req->answered = 1;
    req->accepted = 1;
    return cws_conn_id_of(l, req->conn);
}

void cws_format_peer(int fd, char *out, size_t cap) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char ip[INET6_ADDRSTRLEN];
    if (cap) out[0] = 0;
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) return;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        snprintf(out, cap, "%s:%u", ip, ntohs(a->sin_port));
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        snprintf(out, cap, "[%s]:%u", ip, ntohs(a->sin6_port));
    }
}

const char *cws_request_remote(const cws_request *creq) {
    cws_request *req = (cws_request *)creq;
    if (!req->remote[0]) cws_format_peer(req->conn->fd, req->remote, sizeof req->remote);
    return req->remote;
}

const char *cws_request_tls_server_name(const cws_request *req) { return req ? cws_tls_server_name(req->conn) : NULL; }


