/*
 * The epoll backend: level-triggered readiness, one recv per ready socket per
 * turn into the loop's 64 KiB buffer (fair between connections; a socket with
 * more data is simply reported again), writes with send (one span) or sendmsg over the queued
 * messages, EPOLLOUT only while a write is blocked.
 */
#include "engine_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

/* epoll user data: connection ids are at least 1 << 32 (the generation is
 * >= 1), so small numbers name the wake descriptor and each listener. */
#define CWS_EP_WAKE 0
#define CWS_EP_LISTENER(k) (1 + (uint64_t)(k))
#define CWS_EP_IS_LISTENER(id) ((id) >= 1 && (id) <= CWS_MAX_LISTENERS)

/* A write of several queued messages copies the small ones (a chat line, a
 * fan-out's 34 B frame) into one contiguous span of the loop's gather buffer
 * first: sendmsg is synchronous, so one buffer serves every connection, and
 * the kernel copies one segment instead of sixteen (a fan-out burst). */
#define CWS_EP_GATHER (64u << 10)
#define CWS_EP_GATHER_SMALL 1024

typedef struct cws_epoll {
    int epfd;
    uint8_t *gather; /* CWS_EP_GATHER bytes, made when a write first has several messages */
} cws_epoll;

static int cws_ep_ctl(cws_loop *l, int op, int fd, uint32_t events, uint64_t data) {
    cws_epoll *e = l->be;
    struct epoll_event ev = {.events = events, .data.u64 = data};
    return epoll_ctl(e->epfd, op, fd, &ev);
}

static int cws_ep_init(cws_loop *l, char *err, size_t cap) {
    cws_epoll *e = calloc(1, sizeof *e);
    l->rbuf = malloc(CWS_RECV_BUF_SIZE);
    if (!e || !l->rbuf) {
        free(e);
        snprintf(err, cap, "out of memory");
        return -1;
    }
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (e->epfd < 0) {
        snprintf(err, cap, "epoll_create1: %s", strerror(errno));
        free(e);
        return -1;
    }
    l->be = e;
    for (unsigned k = 0; k < CWS_MAX_LISTENERS; k++)
        if (l->listen_fd[k] >= 0 && cws_ep_ctl(l, EPOLL_CTL_ADD, l->listen_fd[k], EPOLLIN, CWS_EP_LISTENER(k)) < 0) {
            snprintf(err, cap, "epoll_ctl: %s", strerror(errno));
            return -1;
        }
    if (cws_ep_ctl(l, EPOLL_CTL_ADD, l->wake_fd, EPOLLIN, CWS_EP_WAKE) < 0) {
        snprintf(err, cap, "epoll_ctl: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static void cws_ep_fini(cws_loop *l) {
    cws_epoll *e = l->be;
    close(e->epfd);
    free(e->gather);
    free(e);
    l->be = NULL;
}

static void cws_ep_accept(cws_loop *l, unsigned k) {
    /* Bounded batch: other sockets get their turn between batches. */
    for (int i = 0; i < 64 && l->listen_fd[k] >= 0; i++) {
        int fd = accept4(l->listen_fd[k], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            /* EAGAIN: drained. Out of descriptors: the engine pauses us. */
            cws_loop_accept_failed(l, errno);
            return;
        }
        int one = 1;
        /* We batch writes ourselves; Nagle would hold small frames for an ACK. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        cws_loop_accepted(l, fd, k);
    }
}

static int cws_ep_conn_start(cws_loop *l, cws_conn *c) {
    uint64_t id = ((uint64_t)c->gen << 32) | ((uint64_t)l->index << CWS_SLOT_BITS) | c->slot;
    return cws_ep_ctl(l, EPOLL_CTL_ADD, c->fd, EPOLLIN, id);
}

/* The events c waits for: input unless the application stopped reading it,
 * writability while a write is blocked. */
static int cws_ep_watch(cws_loop *l, cws_conn *c, int want_write) {
    uint64_t id = ((uint64_t)c->gen << 32) | ((uint64_t)l->index << CWS_SLOT_BITS) | c->slot;
    uint32_t events = ((c->flags & CWS_CF_PAUSED) ? 0 : EPOLLIN) | (want_write ? EPOLLOUT : 0);
    return cws_ep_ctl(l, EPOLL_CTL_MOD, c->fd, events, id);
}

static void cws_ep_want_write(cws_loop *l, cws_conn *c, int on) {
    if (!!(c->flags & CWS_CF_WANT_WRITE) == on) return;
    if (cws_ep_watch(l, c, on) == 0) {
        if (on) c->flags |= CWS_CF_WANT_WRITE;
        else c->flags &= (uint16_t)~CWS_CF_WANT_WRITE;
    }
}

/* Level-triggered: without EPOLLIN the socket is simply not reported readable
 * (a peer that hangs up is, through EPOLLHUP, and its last bytes are read). */
static void cws_ep_conn_reading(cws_loop *l, cws_conn *c) {
    if (cws_ep_watch(l, c, (c->flags & CWS_CF_WANT_WRITE) != 0) < 0) cws_conn_eof(l, c, errno);
}

static void cws_ep_flush(cws_loop *l, cws_conn *c) {
    cws_epoll *e = l->be;
    struct iovec iov[CWS_IOV_MAX];
    while (c->qcount && c->state != CWS_CONN_DEAD) {
        if (c->tls && cws_tls_seal(l, c) < 0) return;
        /* (Out of memory for the buffer: every message its own iovec.) */
        if (c->qcount > 1 && !e->gather) e->gather = malloc(CWS_EP_GATHER);
        int n = cws_conn_gather_iov(c, iov, CWS_IOV_MAX, c->qcount > 1 ? e->gather : NULL, CWS_EP_GATHER,
                                    CWS_EP_GATHER_SMALL, NULL);
        if (!n) break; /* TLS: plaintext waiting for its handshake */
        size_t total = 0;
        for (int i = 0; i < n; i++) total += iov[i].iov_len;
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        /* MSG_NOSIGNAL: a reset peer gives EPIPE here, not SIGPIPE. */
        CWS_STAT_ADD(l, socket_writes, 1); /* before: counted by the time the peer has the bytes */
        /* One span (an echo, or a burst copied together): a plain send, which
         * spares the kernel copying in a msghdr and an iovec array. */
        ssize_t w = n == 1 ? send(c->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL) : sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                cws_ep_want_write(l, c, 1);
                return;
            }
            cws_conn_eof(l, c, errno); /* EPIPE, ECONNRESET, ... */
            return;
        }
        cws_conn_wrote(l, c, (size_t)w);
        if ((size_t)w < total) {
            /* The socket buffer is full: wait for EPOLLOUT. */
            if (c->qcount && c->state != CWS_CONN_DEAD) cws_ep_want_write(l, c, 1);
            return;
        }
    }
    if (c->state != CWS_CONN_DEAD) cws_ep_want_write(l, c, 0);
}

static void cws_ep_conn_close(cws_loop *l, cws_conn *c) {
    /* close() removes the fd from the epoll set: it is never dup'ed. */
    close(c->fd);
    c->fd = -1;
    cws_conn_release(l, c);
}

static void cws_ep_pause_accept(cws_loop *l, int on) {
    for (unsigned k = 0; k < CWS_MAX_LISTENERS; k++) {
        if (l->listen_fd[k] < 0) continue;
        if (on) cws_ep_ctl(l, EPOLL_CTL_DEL, l->listen_fd[k], 0, 0);
        else cws_ep_ctl(l, EPOLL_CTL_ADD, l->listen_fd[k], EPOLLIN, CWS_EP_LISTENER(k));
    }
}

static void cws_ep_stop_accept(cws_loop *l) {
    for (unsigned k = 0; k < CWS_MAX_LISTENERS; k++) {
        if (l->listen_fd[k] < 0) continue;
        close(l->listen_fd[k]);
        l->listen_fd[k] = -1;
    }
}

/* Where the next read goes: the loop's buffer, or, in the payload of a
 * large one-frame message (cws_rmsg_start), that message's own block, for
 * at most the rest of the payload, which the parser then unmasks where it
 * lies (no copy out of the loop's buffer). Plaintext only: TLS reads records. */
#define CWS_EP_DIRECT_MIN 4096

static uint8_t *cws_ep_read_target(cws_loop *l, cws_conn *c, size_t *want) {
    if (!(c->flags & CWS_CF_RMSG) || c->tls || !c->parser.in_payload ||
        (c->state != CWS_CONN_OPEN && c->state != CWS_CONN_CLOSING))
        return l->rbuf;
    size_t left = c->rcap - c->rlen;
    if (left < CWS_EP_DIRECT_MIN) return l->rbuf;
    if (*want > left) *want = left;
    return c->rbuf + c->rlen;
}

static void cws_ep_read(cws_loop *l, cws_conn *c) {
    size_t total = 0;
    for (;;) {
        size_t want = cws_read_budget(c) - total;
        uint8_t *into = cws_ep_read_target(l, c, &want);
        ssize_t n = recv(c->fd, into, want, 0);
        if (n > 0) {
            total += (size_t)n;
            cws_conn_input(l, c, into, (size_t)n);
            /* More this turn only in the middle of a big message (the socket
             * had more, and the budget allows it). */
            if ((size_t)n < want || c->state == CWS_CONN_DEAD || (c->flags & (CWS_CF_PAUSED | CWS_CF_READ_DONE)) ||
                total >= cws_read_budget(c))
                return;
            continue;
        }
        if (n == 0) {
            cws_conn_eof(l, c, 0);
            return;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        cws_conn_eof(l, c, errno);
        return;
    }
}

static void cws_ep_run(cws_loop *l) {
    cws_epoll *e = l->be;
    struct epoll_event evs[256];
    cws_loop_started(l, 0);
    int timeout = cws_loop_turn(l);
    while (!cws_loop_done(l)) {
        int n = epoll_wait(e->epfd, evs, 256, timeout);
        if (cws_loop_fault_wait(l)) n = -1, errno = EIO;
        if (n < 0) {
            if (errno != EINTR) {
                cws_loop_fail(l, "epoll_wait", errno);
                return;
            }
            n = 0;
        }
        for (int i = 0; i < n; i++) {
            uint64_t id = evs[i].data.u64;
            if (CWS_EP_IS_LISTENER(id)) {
                cws_ep_accept(l, (unsigned)(id - CWS_EP_LISTENER(0)));
                continue;
            }
            if (id == CWS_EP_WAKE) {
                uint64_t v;
                while (read(l->wake_fd, &v, sizeof v) < 0 && errno == EINTR) {
                }
                cws_loop_drain_inbox(l);
                continue;
            }
            cws_conn *c = cws_loop_conn(l, id);
            if (!c) continue; /* finished earlier in this batch */
            uint32_t ev = evs[i].events;
            if (ev & EPOLLOUT) {
                cws_ep_flush(l, c);
                if (c->state == CWS_CONN_DEAD) continue;
            }
            /* HUP and ERR surface through recv as 0 or an errno. */
            if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) cws_ep_read(l, c);
        }
        timeout = cws_loop_turn(l);
    }
}

const cws_backend_ops cws_epoll_ops = {
    .name = "epoll",
    .loop_init = cws_ep_init,
    .loop_run = cws_ep_run,
    .loop_fini = cws_ep_fini,
    .conn_start = cws_ep_conn_start,
    .conn_flush = cws_ep_flush,
    .conn_close = cws_ep_conn_close,
    .stop_accept = cws_ep_stop_accept,
    .pause_accept = cws_ep_pause_accept,
    .conn_reading = cws_ep_conn_reading,
};
