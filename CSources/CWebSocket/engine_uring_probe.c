/*
 * Does io_uring work here, with every operation the backend uses? Opcode
 * tables are not enough: multishot recv (6.0) and cancel-by-fd (5.19) are
 * flags on opcodes that older kernels have, and a kernel that lacks them
 * answers -EINVAL only when the request runs. So the probe runs each one, on
 * a socketpair and a listening AF_UNIX socket of its own, the way the backend
 * will, and the server picks epoll when any of them fails.
 */
#include "engine_uring.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CWS_PROBE_BUFS 8
#define CWS_PROBE_BUF_SIZE 64
#define CWS_PROBE_BGID 0

enum { P_RECV = 1, P_SEND, P_SENDMSG, P_READ, P_CANCEL, P_ACCEPT, P_ACCEPT_CANCEL, P_KINDS };

typedef struct cws_probe {
    struct io_uring ring;
    struct io_uring_buf_ring *br;
    uint8_t bufs[CWS_PROBE_BUFS][CWS_PROBE_BUF_SIZE];
    /* The latest completion of each request, and how many it had. */
    int res[P_KINDS];
    unsigned flags[P_KINDS];
    int count[P_KINDS];
    const char *disable; /* steps to report as missing (tests of the fallback) */
} cws_probe;

static int cws_probe_disabled(const cws_probe *p, const char *step) { return cws_list_has(p->disable, step); }

static struct io_uring_sqe *cws_probe_sqe(cws_probe *p, int kind) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&p->ring);
    if (sqe) io_uring_sqe_set_data64(sqe, (uint64_t)kind);
    return sqe;
}

/* Submits and gathers completions until `kind` has completed `want` times in
 * all (or a second passes: the probe never hangs server creation). */
static int cws_probe_until(cws_probe *p, int kind, int want) {
    for (int round = 0; round < 32 && p->count[kind] < want; round++) {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {.tv_sec = 1, .tv_nsec = 0};
        int rc = io_uring_submit_and_wait_timeout(&p->ring, &cqe, 1, &ts, NULL);
        if (rc < 0 && rc != -EINTR) return rc;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&p->ring, head, cqe) {
            uint64_t k = io_uring_cqe_get_data64(cqe);
            if (k > 0 && k < P_KINDS) {
                p->res[k] = cqe->res;
                p->flags[k] = cqe->flags;
                p->count[k]++;
            }
            if (k == P_RECV && (cqe->flags & IORING_CQE_F_BUFFER)) {
                unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
                io_uring_buf_ring_add(p->br, p->bufs[bid % CWS_PROBE_BUFS], CWS_PROBE_BUF_SIZE,
                                      (unsigned short)bid, io_uring_buf_ring_mask(CWS_PROBE_BUFS), 0);
                io_uring_buf_ring_advance(p->br, 1);
            }
            n++;
        }
        io_uring_cq_advance(&p->ring, n);
    }
    return p->count[kind] >= want ? 0 : -ETIME;
}

static int cws_probe_fail(char *why, size_t cap, const char *step, int err) {
    snprintf(why, cap, "%s: %s", step, err ? strerror(err < 0 ? -err : err) : "disabled by configuration");
    return err ? (err < 0 ? err : -err) : -ENOSYS;
}

/* The steps, in the order the backend depends on them. */
static int cws_probe_run(cws_probe *p, int sv[2], int efd, int lfd, char *why, size_t cap) {
    int rc;
    /* Multishot recv from a provided-buffer ring. */
    struct io_uring_sqe *sqe = cws_probe_sqe(p, P_RECV);
    io_uring_prep_recv_multishot(sqe, sv[0], NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = CWS_PROBE_BGID;
    /* Send. */
    sqe = cws_probe_sqe(p, P_SEND);
    io_uring_prep_send(sqe, sv[1], "probe", 5, MSG_NOSIGNAL);
    if ((rc = cws_probe_until(p, P_SEND, 1)) < 0 || p->res[P_SEND] != 5 || cws_probe_disabled(p, "send"))
        return cws_probe_fail(why, cap, "send", rc < 0 ? rc : p->res[P_SEND] < 0 ? p->res[P_SEND] : 0);
    if ((rc = cws_probe_until(p, P_RECV, 1)) < 0 || p->res[P_RECV] <= 0 ||
        !(p->flags[P_RECV] & IORING_CQE_F_MORE) || !(p->flags[P_RECV] & IORING_CQE_F_BUFFER) ||
        cws_probe_disabled(p, "recv-multishot"))
        return cws_probe_fail(why, cap, "multishot recv",
                              rc < 0 ? rc : p->res[P_RECV] < 0 ? p->res[P_RECV] : 0);
    /* Sendmsg, received by the same (still armed) recv. */
    struct iovec iov = {.iov_base = "again", .iov_len = 5};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    sqe = cws_probe_sqe(p, P_SENDMSG);
    io_uring_prep_sendmsg(sqe, sv[1], &mh, MSG_NOSIGNAL);
    if ((rc = cws_probe_until(p, P_SENDMSG, 1)) < 0 || p->res[P_SENDMSG] != 5 || cws_probe_disabled(p, "sendmsg"))
        return cws_probe_fail(why, cap, "sendmsg", rc < 0 ? rc : p->res[P_SENDMSG] < 0 ? p->res[P_SENDMSG] : 0);
    if ((rc = cws_probe_until(p, P_RECV, 2)) < 0 || !(p->flags[P_RECV] & IORING_CQE_F_MORE))
        return cws_probe_fail(why, cap, "multishot recv (second completion)", rc < 0 ? rc : -EINVAL);
    /* Read of an eventfd: the loop's wake-up. */
    uint64_t one = 1, got = 0;
    if (write(efd, &one, sizeof one) != sizeof one) return cws_probe_fail(why, cap, "eventfd", errno);
    sqe = cws_probe_sqe(p, P_READ);
    io_uring_prep_read(sqe, efd, &got, sizeof got, 0);
    if ((rc = cws_probe_until(p, P_READ, 1)) < 0 || p->res[P_READ] != (int)sizeof got || cws_probe_disabled(p, "read"))
        return cws_probe_fail(why, cap, "read", rc < 0 ? rc : p->res[P_READ] < 0 ? p->res[P_READ] : 0);
    /* Cancel by fd: how a connection's requests end when it closes. */
    sqe = cws_probe_sqe(p, P_CANCEL);
    io_uring_prep_cancel_fd(sqe, sv[0], IORING_ASYNC_CANCEL_ALL);
    if ((rc = cws_probe_until(p, P_CANCEL, 1)) < 0 || p->res[P_CANCEL] < 1 || cws_probe_disabled(p, "cancel-fd"))
        return cws_probe_fail(why, cap, "cancel by fd", rc < 0 ? rc : p->res[P_CANCEL] < 0 ? p->res[P_CANCEL] : 0);
    if ((rc = cws_probe_until(p, P_RECV, 3)) < 0 || p->res[P_RECV] != -ECANCELED)
        return cws_probe_fail(why, cap, "cancel by fd (recv not ended)", rc < 0 ? rc : -EINVAL);
    /* Multishot accept on a listening socket. */
    sqe = cws_probe_sqe(p, P_ACCEPT);
    io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    io_uring_submit(&p->ring);
    struct sockaddr_un addr;
    socklen_t alen = sizeof addr;
    int cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (cfd < 0 || getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0 ||
        connect(cfd, (struct sockaddr *)&addr, alen) < 0) {
        int e = errno;
        if (cfd >= 0) close(cfd);
        return cws_probe_fail(why, cap, "accept (probe socket)", e);
    }
    rc = cws_probe_until(p, P_ACCEPT, 1);
    close(cfd);
    if (p->count[P_ACCEPT] && p->res[P_ACCEPT] >= 0) close(p->res[P_ACCEPT]);
    if (rc < 0 || p->res[P_ACCEPT] < 0 || !(p->flags[P_ACCEPT] & IORING_CQE_F_MORE) ||
        cws_probe_disabled(p, "accept-multishot"))
        return cws_probe_fail(why, cap, "multishot accept", rc < 0 ? rc : p->res[P_ACCEPT] < 0 ? p->res[P_ACCEPT] : 0);
    sqe = cws_probe_sqe(p, P_ACCEPT_CANCEL);
    io_uring_prep_cancel64(sqe, P_ACCEPT, 0);
    cws_probe_until(p, P_ACCEPT, 2);
    return 0;
}

int cws_uring_probe(const char *disable, char *why, size_t cap) {
    cws_probe *p = calloc(1, sizeof *p);
    if (!p) return cws_probe_fail(why, cap, "probe", ENOMEM);
    p->disable = disable;
    int rc = cws_ur_queue_init(&p->ring, 0);
    if (rc < 0) {
        free(p);
        return cws_probe_fail(why, cap, "io_uring_queue_init", rc);
    }
    int err = 0;
    size_t brsz = CWS_PROBE_BUFS * sizeof(struct io_uring_buf);
    p->br = cws_ur_buf_ring(&p->ring, CWS_PROBE_BUFS, CWS_PROBE_BGID, &err);
    int sv[2] = {-1, -1};
    int efd = -1, lfd = -1;
    if (!p->br) {
        rc = cws_probe_fail(why, cap, "provided buffer rings", err);
        goto out;
    }
    for (unsigned i = 0; i < CWS_PROBE_BUFS; i++)
        io_uring_buf_ring_add(p->br, p->bufs[i], CWS_PROBE_BUF_SIZE, (unsigned short)i,
                              io_uring_buf_ring_mask(CWS_PROBE_BUFS), (int)i);
    io_uring_buf_ring_advance(p->br, CWS_PROBE_BUFS);
    /* An abstract AF_UNIX address picked by the kernel (bind with the family
     * alone): nothing on disk, nothing on the network. */
    struct sockaddr_un la = {.sun_family = AF_UNIX};
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0 ||
        (efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0 ||
        (lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0 ||
        bind(lfd, (struct sockaddr *)&la, sizeof(sa_family_t)) < 0 || listen(lfd, 4) < 0) {
        rc = cws_probe_fail(why, cap, "probe sockets", errno);
        goto out;
    }
    rc = cws_probe_run(p, sv, efd, lfd, why, cap);
out:
    /* The ring goes first: it lets go of every request still pending. */
    if (p->br) {
        io_uring_unregister_buf_ring(&p->ring, CWS_PROBE_BGID);
        munmap(p->br, brsz);
    }
    cws_ur_queue_exit(&p->ring);
    if (sv[0] >= 0) close(sv[0]);
    if (sv[1] >= 0) close(sv[1]);
    if (efd >= 0) close(efd);
    if (lfd >= 0) close(lfd);
    free(p);
    return rc;
}
