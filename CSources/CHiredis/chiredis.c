#include "chiredis.h"

#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/time.h>
#include <unistd.h>

struct chr_conn {
    redisContext *ctx;
    redisReply *last;   // kept until the next call so chr_push can point into it
    char error[160];
};

static void set_error(chr_conn *c, const char *text, size_t len) {
    if (len >= sizeof(c->error)) len = sizeof(c->error) - 1;
    memcpy(c->error, text, len);
    c->error[len] = 0;
}

static void drop_last(chr_conn *c) {
    if (c->last) {
        freeReplyObject(c->last);
        c->last = NULL;
    }
}

chr_conn *chr_connect(const char *host, int port, int timeout_ms, const char *password, char *err, size_t errlen) {
    struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
    redisContext *ctx = redisConnectWithTimeout(host, port, tv);
    if (!ctx || ctx->err) {
        snprintf(err, errlen, "%s", ctx ? ctx->errstr : "out of memory");
        if (ctx) redisFree(ctx);
        return NULL;
    }
    // The connect timeout does not apply to reads and writes: without this a
    // Redis that stops answering would hang the backplane thread for good.
    if (redisSetTimeout(ctx, tv) != REDIS_OK) {
        snprintf(err, errlen, "cannot set the socket timeout");
        redisFree(ctx);
        return NULL;
    }
    chr_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        redisFree(ctx);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->ctx = ctx;
    if (password) {
        const char *argv[2] = { "AUTH", password };
        size_t lens[2] = { 4, strlen(password) };
        if (chr_append(c, 2, argv, lens) != 0 || chr_reply(c) != 0) {
            snprintf(err, errlen, "AUTH: %s", c->error);
            chr_free(c);
            return NULL;
        }
    }
    return c;
}

void chr_free(chr_conn *c) {
    if (!c) return;
    drop_last(c);
    redisFree(c->ctx);
    free(c);
}

int chr_fd(const chr_conn *c) { return c->ctx->fd; }

const char *chr_error(const chr_conn *c) { return c->error; }

int chr_append(chr_conn *c, int argc, const char **argv, const size_t *lens) {
    if (redisAppendCommandArgv(c->ctx, argc, argv, lens) != REDIS_OK) {
        set_error(c, c->ctx->errstr, strlen(c->ctx->errstr));
        return -1;
    }
    return 0;
}

int chr_flush(chr_conn *c) {
    int done = 0;
    while (!done) {
        if (redisBufferWrite(c->ctx, &done) != REDIS_OK) {
            set_error(c, c->ctx->errstr, strlen(c->ctx->errstr));
            return -1;
        }
    }
    return 0;
}

int chr_reply(chr_conn *c) {
    drop_last(c);
    void *reply = NULL;
    if (redisGetReply(c->ctx, &reply) != REDIS_OK || !reply) {
        set_error(c, c->ctx->errstr, strlen(c->ctx->errstr));
        return -1;
    }
    c->last = reply;
    if (c->last->type == REDIS_REPLY_ERROR) {
        set_error(c, c->last->str, c->last->len);
        return 1;
    }
    return 0;
}

size_t chr_reply_count(const chr_conn *c) {
    return c->last && c->last->type == REDIS_REPLY_ARRAY ? c->last->elements : 0;
}

int chr_reply_integer(const chr_conn *c, long long *out) {
    if (!c->last || c->last->type != REDIS_REPLY_INTEGER) return 0;
    *out = c->last->integer;
    return 1;
}

const char *chr_reply_string(const chr_conn *c, size_t i, size_t *len) {
    if (i >= chr_reply_count(c)) return NULL;
    const redisReply *e = c->last->element[i];
    if (e->type != REDIS_REPLY_STRING) return NULL;
    *len = e->len;
    return e->str;
}

int chr_fill(chr_conn *c) {
    if (redisBufferRead(c->ctx) != REDIS_OK) {
        set_error(c, c->ctx->errstr, strlen(c->ctx->errstr));
        return -1;
    }
    return 0;
}

static int is(const redisReply *r, const char *word) {
    size_t n = strlen(word);
    return r->type == REDIS_REPLY_STRING && r->len == n && memcmp(r->str, word, n) == 0;
}

int chr_next_push(chr_conn *c, chr_push *out) {
    drop_last(c);
    void *reply = NULL;
    if (redisGetReplyFromReader(c->ctx, &reply) != REDIS_OK) {
        set_error(c, c->ctx->errstr, strlen(c->ctx->errstr));
        return -1;
    }
    if (!reply) return 0;
    c->last = reply;
    memset(out, 0, sizeof(*out));
    redisReply *r = c->last;
    if (r->type == REDIS_REPLY_ERROR) {
        out->kind = CHR_PUSH_ERROR;
        out->payload = r->str;
        out->payload_len = r->len;
        return 1;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || r->element[1]->type != REDIS_REPLY_STRING) return 1;
    out->subject = r->element[1]->str;
    out->subject_len = r->element[1]->len;
    if ((is(r->element[0], "message") || is(r->element[0], "smessage")) && r->element[2]->type == REDIS_REPLY_STRING) {
        out->kind = CHR_PUSH_MESSAGE;
        out->payload = r->element[2]->str;
        out->payload_len = r->element[2]->len;
    } else if (is(r->element[0], "subscribe") || is(r->element[0], "ssubscribe")) {
        out->kind = CHR_PUSH_SUBSCRIBE;
        out->count = r->element[2]->integer;
    } else if (is(r->element[0], "unsubscribe") || is(r->element[0], "sunsubscribe")) {
        out->kind = CHR_PUSH_UNSUBSCRIBE;
        out->count = r->element[2]->integer;
    }
    return 1;
}

unsigned chr_key_slot(const char *key, size_t len) {
    // Only the part between the first '{' and the next '}' counts, if non-empty.
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t rest = len - (size_t)(open - key) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close && close > open + 1) {
            key = open + 1;
            len = (size_t)(close - key);
        }
    }
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((uint8_t)key[i] << 8);
        for (int bit = 0; bit < 8; bit++) crc = (uint16_t)((crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc & 16383;
}

size_t chr_reply_slot_ranges(const chr_conn *c, chr_slot_range *out, size_t max) {
    const redisReply *r = c->last;
    if (!r || r->type != REDIS_REPLY_ARRAY) return 0;
    size_t n = 0;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *range = r->element[i];
        if (range->type != REDIS_REPLY_ARRAY || range->elements < 3) continue;
        const redisReply *master = range->element[2];
        if (range->element[0]->type != REDIS_REPLY_INTEGER || range->element[1]->type != REDIS_REPLY_INTEGER ||
            master->type != REDIS_REPLY_ARRAY || master->elements < 2 ||
            master->element[0]->type != REDIS_REPLY_STRING || master->element[1]->type != REDIS_REPLY_INTEGER) continue;
        if (n < max) {
            out[n].start = (int)range->element[0]->integer;
            out[n].end = (int)range->element[1]->integer;
            out[n].host = master->element[0]->str;
            out[n].host_len = master->element[0]->len;
            out[n].port = (int)master->element[1]->integer;
        }
        n++;
    }
    return n;
}

int chr_waker_new(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

void chr_waker_wake(int fd) {
    uint64_t one = 1;
    // EAGAIN only when the counter is saturated, and then it is readable anyway.
    (void)!write(fd, &one, sizeof(one));
}

void chr_waker_drain(int fd) {
    uint64_t value;
    (void)!read(fd, &value, sizeof(value));
}
