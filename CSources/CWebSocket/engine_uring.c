/*
 * The io_uring backend: multishot accept, multishot recv into a provided
 * buffer ring, one send (or sendmsg over several queued messages) in flight
 * per connection, an eventfd read for cross-thread wake-ups, and the tick
 * timeout passed to io_uring_submit_and_wait_timeout. Every SQE prepared in a
 * turn goes to the kernel in the one io_uring_enter of the next wait.
 */
#include "engine_uring.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/syscall.h>
#include <unistd.h>

#define CWS_UR_ENTRIES 1024
/* A fan-out turn prepares a send per subscriber: 10,000 of them complete in
 * the turn's submissions. With the default CQ (twice the SQ) most waited in
 * the kernel's overflow list (87,494 overflowed completions in 2 s at 10,000
 * subscribers; 19,907 with this size), reaped a CQ's worth per turn. 16 B
 * per entry: 128 KiB. */
#define CWS_UR_CQ_ENTRIES 8192
#define CWS_UR_BUFS 256          /* provided buffers per loop (power of two) */
#define CWS_UR_BUF_SIZE (16 * 1024)
#define CWS_UR_BGID 0
#define CWS_UR_SEND_IOV 64
/* One send is in flight per connection and its completion is seen once a
 * turn, so a send must carry what a turn's input can produce: a turn of tiny
 * replies (64 KiB of 45-byte envelopes is ~1,500 of them) used to go out 16 a
 * turn, and a peer that read everything was closed 1008 at max_send_queue.
 * When more messages are queued than the iovecs hold, the small ones are
 * copied into a gather buffer (consecutive ones share an iovec). */
#define CWS_UR_GATHER (256 * 1024)
#define CWS_UR_GATHER_SMALL 2048 /* messages up to this many bytes are copied */
#define CWS_UR_GATHER_KEEP 8     /* gather buffers kept on the free list */
/* A chat room's join burst queues hundreds of presence messages for every
 * member at once. A gather buffer for each of them copied the same shared
 * messages once per member (2,000 x 256 KiB for a 2,000-member room), and
 * being malloc'd they stayed: glibc raised its mmap threshold past 256 KiB
 * at the first free, served the rest from the heap and kept that heap once
 * the burst was over (45 KB of RSS per member of the idle room, against 2 KB
 * on epoll). So a loop maps at most this many bytes of them, in flight and
 * kept; a connection past that sends 64 iovecs of the messages themselves,
 * and munmap hands the pages back. */
#define CWS_UR_GATHER_LOOP_MAX (8u << 20)
/* Send contexts an idle loop keeps on the free list. A burst to 10,000
 * subscribers has as many sendmsg calls in flight at once (21 MB); the
 * contexts it leaves go once CWS_UR_SENDS_QUIET_TICKS whole ticks passed
 * without needing them. A steady fan-out reuses its 10,000 every turn:
 * freeing all but 256 at each completion cost a malloc and its page faults
 * per send (180,000 minor faults in a 3 s fan-out at 10,000 against 9,500,
 * 10% of the server's CPU). */
#define CWS_UR_SENDS_KEEP 256
#define CWS_UR_SENDS_QUIET_TICKS 2
#define CWS_UR_HEAP_TRIM_MS 10000 /* see cws_ur_trim_heap */
/* A send of a few small messages (a fan-out burst: 16 small frames to each
 * subscriber) copies them into the send context's own 1 KiB, and when that
 * is the whole send it goes as one plain send of one span: the kernel no
 * longer imports an iovec array and copies segment by segment. */
#define CWS_UR_INLINE 1024
#define CWS_UR_INLINE_SMALL 256
#define CWS_UR_HELD_MAX (64u << 20) /* kept input a loop copies out of its buffers, in all */

/* user_data: pointer | kind in the low 3 bits (conns and send contexts are
 * malloc'd, so 8-byte aligned). */
enum { CWS_UD_ACCEPT = 1, CWS_UD_WAKE, CWS_UD_RECV, CWS_UD_SEND, CWS_UD_SENDMSG, CWS_UD_CANCEL, CWS_UD_IGNORE };
#define CWS_UD(p, k) ((uint64_t)(uintptr_t)(p) | (k))
#define CWS_UD_KIND(u) ((unsigned)((u) & 7))
#define CWS_UD_PTR(u) ((void *)(uintptr_t)((u) & ~(uint64_t)7))
/* A listener's multishot accept: its index above the kind. */
#define CWS_UD_ACCEPTING(k) (((uint64_t)(k) << 3) | CWS_UD_ACCEPT)
#define CWS_UD_LISTENER(u) ((unsigned)((u) >> 3))

/* be_flags */
enum {
    CWS_UR_RECV_ARMED = 1,
    CWS_UR_RECV_NOBUFS = 2,
    CWS_UR_RELEASED = 8,
    CWS_UR_DEFERRING = 16, /* over its read budget: its completions wait in u->deferred */
    CWS_UR_THROTTLED = 32, /* its recv was cancelled for the rest of the turn */
    CWS_UR_KEPT = 64,      /* scratch: some of its deferred completions wait another turn */
};

/* Bytes one connection's input may take of a turn: cws_read_budget (epoll
 * reads as much per connection per turn): a flooding client cannot hold the
 * loop, and the other connections' replies go out between its batches. A
 * buffer is delivered whole, so a turn takes at least one (16 KiB). */
#define CWS_UR_NO_BUF 0xFFFF
#define CWS_UR_COPIED 0xFFFE /* a kept completion's bytes, moved out of the loop's buffer */

/* A recv completion kept for a later turn: a buffer (bid) with res bytes, the
 * same bytes copied out of it (bid CWS_UR_COPIED), or an EOF / error (bid
 * CWS_UR_NO_BUF) that must come after them. */
typedef struct cws_udeferred {
    cws_conn *conn;
    uint8_t *copy; /* res bytes, with CWS_UR_COPIED */
    int res;
    uint16_t bid;
    uint8_t keep; /* scratch: waits another turn */
} cws_udeferred;

/* msghdr + iovecs of one sendmsg in flight; recycled through a free list. */
typedef struct cws_usend {
    struct cws_usend *next;
    cws_conn *conn;
    struct msghdr mh;
    uint8_t *gather; /* CWS_UR_GATHER bytes while a send from a backed-up queue is in flight */
    struct iovec iov[CWS_UR_SEND_IOV];
    uint8_t inline_gather[CWS_UR_INLINE];
} cws_usend;

typedef struct cws_uring {
    struct io_uring ring;
    struct io_uring_buf_ring *br;
    uint8_t *bufs;
    uint8_t accepting[CWS_MAX_LISTENERS]; /* a multishot accept is armed on listen_fd[k] */
    uint64_t wake_val;
    cws_usend *free_sends;
    uint32_t nfree_sends;      /* contexts on free_sends */
    uint32_t sends_low;        /* the fewest on free_sends since sends_tick */
    uint32_t sends_tick;       /* the tick that sends_low counts from */
    uint32_t sends_quiet;      /* ticks in a row whose sends_low was over CWS_UR_SENDS_KEEP */
    uint8_t *free_gathers;     /* kept gather buffers, each linked through its first 8 bytes */
    uint32_t nfree_gathers;
    int heap_trim_wanted;      /* a burst's send contexts were freed since the last malloc_trim */
    int heap_trimmed;          /* this loop has called it, last at heap_trimmed_ms */
    uint64_t heap_trimmed_ms;
    int dead;                  /* the ring was torn down after a fatal error */
    cws_conn **rearm;          /* recv to re-arm after ENOBUFS */
    uint32_t nrearm, rearm_cap;
    cws_udeferred *deferred;   /* completions over a connection's read budget, in order */
    uint32_t ndeferred, deferred_cap;
    /* Some deferred completion can run next turn (one of a connection that is
     * only over budget, or that resumed): collect events without sleeping.
     * Those of paused connections alone do not keep the loop awake. */
    int deferred_ready;
    uint64_t held_bytes;       /* kept input copied out of the buffers (cws_ur_move_out) */
    cws_conn **touched;        /* connections that read this turn (their budgets reset) */
    uint32_t ntouched, touched_cap;
} cws_uring;

/* liburing 2.3 and later map a ring's queues with raw system calls, which
 * ThreadSanitizer does not see: when one thread unmaps a ring (a probe's, or a
 * stopped server's) and another thread's new ring is mapped at the same
 * address, TSan still holds the first thread's writes for that memory and
 * reports the second thread's first SQE as a race with them. The kernel
 * orders the unmap before the map; these tell TSan so, keyed by the
 * mappings' addresses (a release at each base before the unmap, an acquire
 * at each base after a map), so only a ring that reuses a mapping's address
 * is ordered after its unmap. Every ring has the same size, so a reused
 * address is a reused base. */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CWS_UR_TSAN 1
#endif
#endif
#ifdef CWS_UR_TSAN
#include <sanitizer/tsan_interface.h>
static void cws_ur_mapping_order(struct io_uring *ring, void (*mark)(void *)) {
    mark(ring->sq.ring_ptr);
    mark(ring->cq.ring_ptr);
    mark(ring->sq.sqes);
}
#define CWS_UR_MAPPED(ring) cws_ur_mapping_order(ring, __tsan_acquire)
#define CWS_UR_UNMAPPING(ring) cws_ur_mapping_order(ring, __tsan_release)
#else
#define CWS_UR_MAPPED(ring) ((void)0)
#define CWS_UR_UNMAPPING(ring) ((void)0)
#endif

void cws_ur_queue_exit(struct io_uring *ring) {
    CWS_UR_UNMAPPING(ring);
    io_uring_queue_exit(ring);
}

int cws_ur_queue_init(struct io_uring *ring, unsigned extra) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    /* SINGLE_ISSUER: only the loop thread submits, so the kernel can skip
     * locking. DEFER_TASKRUN: completions run when we wait, not by
     * interrupting the thread, which batches them per turn. */
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE | extra;
    p.cq_entries = CWS_UR_CQ_ENTRIES;
    int rc = io_uring_queue_init_params(CWS_UR_ENTRIES, ring, &p);
    if (rc == -EINVAL) {
        /* Older kernel: without the flags (COOP would need 5.19 too). */
        memset(&p, 0, sizeof p);
        p.flags = IORING_SETUP_CQSIZE | extra;
        p.cq_entries = CWS_UR_CQ_ENTRIES;
        rc = io_uring_queue_init_params(CWS_UR_ENTRIES, ring, &p);
    }
    if (rc == 0) CWS_UR_MAPPED(ring);
    return rc;
}

struct io_uring_buf_ring *cws_ur_buf_ring(struct io_uring *ring, unsigned entries, int bgid, int *err) {
    size_t sz = entries * sizeof(struct io_uring_buf);
    void *mem = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) {
        *err = -errno;
        return NULL;
    }
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (uint64_t)(uintptr_t)mem;
    reg.ring_entries = entries;
    reg.bgid = (uint16_t)bgid;
    int rc = io_uring_register_buf_ring(ring, &reg, 0);
    if (rc < 0) {
        munmap(mem, sz);
        *err = rc;
        return NULL;
    }
    io_uring_buf_ring_init(mem);
    return mem;
}

static struct io_uring_sqe *cws_ur_sqe(cws_uring *u) {
    if (u->dead) return NULL;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (!sqe) {
        /* SQ full: push what we have and try again. */
        io_uring_submit(&u->ring);
        sqe = io_uring_get_sqe(&u->ring);
    }
    return sqe;
}

static int cws_ur_init(cws_loop *l, char *err, size_t cap) {
    cws_uring *u = calloc(1, sizeof *u);
    if (!u) {
        snprintf(err, cap, "out of memory");
        return -1;
    }
    /* R_DISABLED: the ring is created here but used by the loop thread; the
     * single issuer becomes the thread that enables it. */
    int rc = cws_ur_queue_init(&u->ring, IORING_SETUP_R_DISABLED);
    if (rc < 0) {
        snprintf(err, cap, "io_uring_queue_init: %s", strerror(-rc));
        free(u);
        return -1;
    }
    u->bufs = mmap(NULL, (size_t)CWS_UR_BUFS * CWS_UR_BUF_SIZE, PROT_READ | PROT_WRITE,
                   MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (u->bufs == MAP_FAILED) {
        snprintf(err, cap, "mmap: %s", strerror(errno));
        cws_ur_queue_exit(&u->ring);
        free(u);
        return -1;
    }
    l->be = u;
    return 0;
}

static void cws_ur_gathers_release(cws_loop *l);

static void cws_ur_fini(cws_loop *l) {
    cws_uring *u = l->be;
    if (u->br && !u->dead) io_uring_unregister_buf_ring(&u->ring, CWS_UR_BGID);
    if (u->br) munmap(u->br, CWS_UR_BUFS * sizeof(struct io_uring_buf));
    if (!u->dead) cws_ur_queue_exit(&u->ring);
    munmap(u->bufs, (size_t)CWS_UR_BUFS * CWS_UR_BUF_SIZE);
    while (u->free_sends) {
        cws_usend *s = u->free_sends;
        u->free_sends = s->next;
        free(s);
        CWS_STAT_ADD(l, send_contexts, (uint64_t)-1);
    }
    cws_ur_gathers_release(l);
    free(u->rearm);
    for (uint32_t i = 0; i < u->ndeferred; i++) {
        cws_udeferred *d = &u->deferred[i];
        if (d->bid == CWS_UR_COPIED) {
            free(d->copy);
            CWS_STAT_ADD(l, input_held_bytes, (uint64_t)-(int64_t)d->res);
        } else if (d->bid != CWS_UR_NO_BUF) {
            CWS_STAT_ADD(l, receive_buffers_held, (uint64_t)-1);
        }
    }
    free(u->deferred);
    free(u->touched);
    free(u);
    l->be = NULL;
}

static void cws_ur_arm_accept(cws_loop *l, unsigned k) {
    cws_uring *u = l->be;
    if (l->listen_fd[k] < 0) return;
    struct io_uring_sqe *sqe = cws_ur_sqe(u);
    if (!sqe) return;
    io_uring_prep_multishot_accept(sqe, l->listen_fd[k], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, CWS_UD_ACCEPTING(k));
    u->accepting[k] = 1;
}

static void cws_ur_cancel_accept(cws_uring *u, unsigned k) {
    struct io_uring_sqe *sqe = cws_ur_sqe(u);
    if (sqe) {
        io_uring_prep_cancel64(sqe, CWS_UD_ACCEPTING(k), 0);
        io_uring_sqe_set_data64(sqe, CWS_UD_IGNORE);
    }
}

static void cws_ur_arm_wake(cws_loop *l) {
    cws_uring *u = l->be;
    struct io_uring_sqe *sqe = cws_ur_sqe(u);
    if (!sqe) return;
    io_uring_prep_read(sqe, l->wake_fd, &u->wake_val, sizeof u->wake_val, 0);
    io_uring_sqe_set_data64(sqe, CWS_UD_WAKE);
}

static void cws_ur_arm_recv(cws_loop *l, cws_conn *c) {
    cws_uring *u = l->be;
    struct io_uring_sqe *sqe = cws_ur_sqe(u);
    if (!sqe) {
        cws_conn_eof(l, c, ENOMEM);
        return;
    }
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    /* The kernel picks a buffer from our group when data arrives, so idle
     * connections hold no receive memory. */
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = CWS_UR_BGID;
    io_uring_sqe_set_data64(sqe, CWS_UD(c, CWS_UD_RECV));
    c->be_flags |= CWS_UR_RECV_ARMED;
    c->be_inflight++;
}

static int cws_ur_conn_start(cws_loop *l, cws_conn *c) {
    int one = 1;
    /* We batch writes ourselves; Nagle would hold small frames for an ACK. */
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    cws_ur_arm_recv(l, c);
    return 0;
}

/*
 * The descriptor is closed here and nowhere else: once nothing in the kernel
 * and nothing prepared in the submission queue names it. Descriptor numbers
 * are process-wide and reused lowest-first, so closing earlier would let a
 * request still waiting in the SQ (a SEND prepared earlier in this batch, the
 * cancel itself) reach whatever socket another thread opens with that number.
 * be_inflight counts every request that names c->fd, from prep to its CQE.
 */
static void cws_ur_maybe_release(cws_loop *l, cws_conn *c) {
    if (c->state == CWS_CONN_DEAD && c->be_inflight == 0 && !(c->be_flags & CWS_UR_RELEASED)) {
        c->be_flags |= CWS_UR_RELEASED;
        if (c->fd >= 0) close(c->fd);
        c->fd = -1;
        cws_conn_release(l, c);
    }
}

/* The gather bytes this loop has mapped (in flight and kept) live in its
 * stats, which only this thread writes, and its bound reads them there. */
static uint64_t cws_ur_gather_bytes(const cws_loop *l) {
    return atomic_load_explicit(&l->stats.send_gather_bytes, memory_order_relaxed);
}

static void cws_ur_gather_count(cws_loop *l, int64_t n) {
    CWS_STAT_ADD(l, send_gather_bytes, (uint64_t)n);
    uint64_t now = cws_ur_gather_bytes(l);
    if (now > atomic_load_explicit(&l->stats.send_gather_bytes_peak, memory_order_relaxed))
        atomic_store_explicit(&l->stats.send_gather_bytes_peak, now, memory_order_relaxed);
}

/* A kept gather buffer, a new mapping, or NULL at CWS_UR_GATHER_LOOP_MAX. */
static uint8_t *cws_ur_gather_take(cws_loop *l) {
    cws_uring *u = l->be;
    uint8_t *g = u->free_gathers;
    if (g) {
        memcpy(&u->free_gathers, g, sizeof(uint8_t *));
        u->nfree_gathers--;
        return g;
    }
    if (cws_ur_gather_bytes(l) + CWS_UR_GATHER > CWS_UR_GATHER_LOOP_MAX) return NULL;
    g = mmap(NULL, CWS_UR_GATHER, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g == MAP_FAILED) return NULL;
    cws_ur_gather_count(l, CWS_UR_GATHER);
    return g;
}

static void cws_ur_gather_give(cws_loop *l, uint8_t *g) {
    cws_uring *u = l->be;
    if (u->nfree_gathers < CWS_UR_GATHER_KEEP) {
        memcpy(g, &u->free_gathers, sizeof(uint8_t *));
        u->free_gathers = g;
        u->nfree_gathers++;
        return;
    }
    munmap(g, CWS_UR_GATHER);
    cws_ur_gather_count(l, -(int64_t)CWS_UR_GATHER);
}

/* A burst that kept some has gone quiet (cws_ur_trim_sends): its 2 MiB of
 * touched pages go back too. */
static void cws_ur_gathers_release(cws_loop *l) {
    cws_uring *u = l->be;
    while (u->free_gathers) {
        uint8_t *g = u->free_gathers;
        memcpy(&u->free_gathers, g, sizeof(uint8_t *));
        munmap(g, CWS_UR_GATHER);
        cws_ur_gather_count(l, -(int64_t)CWS_UR_GATHER);
    }
    u->nfree_gathers = 0;
}

/* Fills s->iov from c's queue (see CWS_UR_GATHER); returns how many queue
 * entries it covers, each whole (the kernel, or our copy, reads them). */
static uint32_t cws_ur_send_iov(cws_loop *l, cws_conn *c, cws_usend *s) {
    s->gather = c->qcount > CWS_UR_SEND_IOV ? cws_ur_gather_take(l) : NULL;
    int gather = s->gather != NULL;
    uint32_t entries;
    int n = gather ? cws_conn_gather_iov(c, s->iov, CWS_UR_SEND_IOV, s->gather, CWS_UR_GATHER, CWS_UR_GATHER_SMALL,
                                         &entries)
                   : cws_conn_gather_iov(c, s->iov, CWS_UR_SEND_IOV, s->inline_gather, CWS_UR_INLINE,
                                         CWS_UR_INLINE_SMALL, &entries);
    s->mh.msg_iovlen = (size_t)n;
    return entries;
}

static void cws_ur_conn_flush(cws_loop *l, cws_conn *c) {
    cws_uring *u = l->be;
    if ((c->flags & CWS_CF_WANT_WRITE) || !c->qcount || c->state == CWS_CONN_DEAD) return;
    /* TLS: encrypt now, while no write is in flight: what queued meanwhile is one record. */
    if (c->tls && cws_tls_seal(l, c) < 0) return;
    struct iovec one;
    if (cws_conn_iov(c, &one, 1) == 0) return; /* TLS: plaintext waiting for its handshake */
    struct io_uring_sqe *sqe = cws_ur_sqe(u);
    if (!sqe) return; /* retried at the next flush of this connection */
    if (c->qcount == 1) {
        /* One message: a plain send needs no msghdr. MSG_NOSIGNAL: EPIPE, not SIGPIPE. */
        io_uring_prep_send(sqe, c->fd, one.iov_base, one.iov_len, MSG_NOSIGNAL);
        io_uring_sqe_set_data64(sqe, CWS_UD(c, CWS_UD_SEND));
        c->qsending = 1; /* the kernel reads these entries until the CQE */
    } else {
        cws_usend *s = u->free_sends;
        if (s) {
            u->free_sends = s->next;
            u->nfree_sends--;
            if (u->nfree_sends < u->sends_low) u->sends_low = u->nfree_sends;
        } else if ((s = malloc(sizeof *s))) {
            u->sends_low = 0;
            CWS_STAT_ADD(l, send_contexts, 1);
            CWS_STAT_ADD(l, send_contexts_made, 1);
        } else {
            io_uring_prep_nop(sqe);
            io_uring_sqe_set_data64(sqe, CWS_UD_IGNORE);
            cws_conn_eof(l, c, ENOMEM);
            return;
        }
        s->conn = c;
        memset(&s->mh, 0, sizeof s->mh);
        s->mh.msg_iov = s->iov;
        c->qsending = cws_ur_send_iov(l, c, s);
        /* One span (the messages copied together): a plain send of it. */
        if (s->mh.msg_iovlen == 1) io_uring_prep_send(sqe, c->fd, s->iov[0].iov_base, s->iov[0].iov_len, MSG_NOSIGNAL);
        else io_uring_prep_sendmsg(sqe, c->fd, &s->mh, MSG_NOSIGNAL);
        io_uring_sqe_set_data64(sqe, CWS_UD(s, CWS_UD_SENDMSG));
    }
    c->flags |= CWS_CF_WANT_WRITE; /* here: a send is in flight */
    c->be_inflight++;
    CWS_STAT_ADD(l, socket_writes, 1);
}

static void cws_ur_conn_close(cws_loop *l, cws_conn *c) {
    cws_uring *u = l->be;
    if (u->dead) c->be_inflight = 0; /* the ring's teardown ended every request */
    /* Its deferred completions (a paused connection's) are dropped next turn: don't sleep through it. */
    if (c->be_flags & CWS_UR_DEFERRING) u->deferred_ready = 1;
    if (c->be_inflight) {
        /* End every request on this socket: the multishot recv, and a SEND
         * that waits for a peer who stopped reading (left alone, it would
         * hold the connection, its queue and a graceful stop for as long as
         * the peer holds out). Cancelling by fd catches requests still in the
         * SQ too, since the cancel is issued after them. */
        struct io_uring_sqe *sqe = cws_ur_sqe(u);
        if (sqe) {
            io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
            io_uring_sqe_set_data64(sqe, CWS_UD(c, CWS_UD_CANCEL));
            c->be_inflight++; /* the cancel names the fd as well */
        } else {
            /* No room even after a submit: a shut-down socket completes its
             * pending requests with EOF or EPIPE. */
            shutdown(c->fd, SHUT_RDWR);
        }
    }
    cws_ur_maybe_release(l, c);
}

/* The listener's descriptor, like a connection's, is closed only once the
 * accept that names it has ended (its last CQE comes without F_MORE). It
 * stops listening at once, though: the armed accept holds the socket, and
 * the loop may end before the cancel's completion (the ring goes only at
 * cws_server_destroy), so a closed but still referenced listener would stay
 * in the SO_REUSEPORT group after cws_server_stop, taking connections that
 * nobody serves. shutdown() takes it out of LISTEN now. */
static void cws_ur_stop_accept(cws_loop *l) {
    cws_uring *u = l->be;
    for (unsigned k = 0; k < CWS_MAX_LISTENERS; k++) {
        if (l->listen_fd[k] < 0) continue;
        shutdown(l->listen_fd[k], SHUT_RDWR);
        if (u->accepting[k]) {
            cws_ur_cancel_accept(u, k);
            continue;
        }
        close(l->listen_fd[k]);
        l->listen_fd[k] = -1;
    }
}

static void cws_ur_pause_accept(cws_loop *l, int on) {
    cws_uring *u = l->be;
    for (unsigned k = 0; k < CWS_MAX_LISTENERS; k++) {
        if (l->listen_fd[k] < 0) continue;
        /* Normally the failing multishot has ended already; if not, end it. */
        if (on && u->accepting[k]) cws_ur_cancel_accept(u, k);
        else if (!on && !u->accepting[k]) cws_ur_arm_accept(l, k);
    }
}

static void cws_ur_recycle(cws_uring *u, unsigned bid) {
    io_uring_buf_ring_add(u->br, u->bufs + (size_t)bid * CWS_UR_BUF_SIZE, CWS_UR_BUF_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(CWS_UR_BUFS), 0);
    io_uring_buf_ring_advance(u->br, 1);
}

static int cws_ur_grow(void **p, uint32_t *cap, size_t size) {
    uint32_t n = *cap ? *cap * 2 : 64;
    void *q = realloc(*p, n * size);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}

/* Input, EOF or an error from c's recv, in order. */
static void cws_ur_deliver(cws_loop *l, cws_conn *c, unsigned bid, int res) {
    cws_uring *u = l->be;
    if (bid != CWS_UR_NO_BUF) {
        if (res > 0 && c->state != CWS_CONN_DEAD)
            cws_conn_input(l, c, u->bufs + (size_t)bid * CWS_UR_BUF_SIZE, (size_t)res);
        cws_ur_recycle(u, bid);
    } else if (res == 0 && c->state != CWS_CONN_DEAD) {
        cws_conn_eof(l, c, 0);
    } else if (res < 0 && res != -ECANCELED && c->state != CWS_CONN_DEAD) {
        cws_conn_eof(l, c, -res);
    }
}

/* A kept completion of a stopped connection (paused, or its upgrade waiting
 * for the application's answer) gives its buffer back to the loop at once,
 * its bytes copied: it may wait for seconds or for good, and the loop's 256
 * buffers are every connection's. Before, a few hundred peers that sent
 * while stopped (slow handlers, or pre-authentication clients on an endpoint
 * that awaits its decision) held them all, and the loop read one buffer a
 * turn for everyone else. Bounds, since the kernel may have filled every
 * free buffer for one connection before the recv's cancel took effect (a
 * client that floods, then its handler falls behind, is no attacker):
 *   - a request waiting for its answer keeps what epoll keeps for it (a
 *     message and one read, cws_deferred_input) and closes past it;
 *   - a loop copies CWS_UR_HELD_MAX in all; past it input waits in its
 *     buffer, as before (memory bounded, other connections slowed).
 * 0; -ENOMEM or -ENOBUFS (the bytes stay in their buffer); -EMSGSIZE: close. */
static int cws_ur_move_out(cws_loop *l, cws_udeferred *d) {
    if (d->bid == CWS_UR_NO_BUF || d->bid == CWS_UR_COPIED || d->res <= 0) return 0;
    cws_uring *u = l->be;
    cws_conn *c = d->conn;
    if (c->state == CWS_CONN_DEFERRED &&
        (uint64_t)c->be_held_bytes + (uint64_t)d->res > l->srv->cfg.max_message_size + CWS_RECV_BUF_SIZE)
        return -EMSGSIZE;
    if (u->held_bytes + (uint64_t)d->res > CWS_UR_HELD_MAX) return -ENOBUFS;
    uint8_t *copy = malloc((size_t)d->res);
    if (!copy) return -ENOMEM;
    memcpy(copy, u->bufs + (size_t)d->bid * CWS_UR_BUF_SIZE, (size_t)d->res);
    cws_ur_recycle(u, d->bid);
    CWS_STAT_ADD(l, receive_buffers_held, (uint64_t)-1);
    CWS_STAT_ADD(l, input_held_bytes, (uint64_t)d->res);
    c->be_held_bytes += (uint32_t)d->res;
    u->held_bytes += (uint64_t)d->res;
    d->copy = copy;
    d->bid = CWS_UR_COPIED;
    return 0;
}

/* Delivers a kept completion and lets go of what held its bytes. */
static void cws_ur_deliver_kept(cws_loop *l, cws_udeferred *d) {
    if (d->bid == CWS_UR_COPIED) {
        d->conn->be_held_bytes -= (uint32_t)d->res;
        ((cws_uring *)l->be)->held_bytes -= (uint64_t)d->res;
        CWS_STAT_ADD(l, input_held_bytes, (uint64_t)-(int64_t)d->res);
        if (d->conn->state != CWS_CONN_DEAD) cws_conn_input(l, d->conn, d->copy, (size_t)d->res);
        free(d->copy);
        return;
    }
    if (d->bid != CWS_UR_NO_BUF) CWS_STAT_ADD(l, receive_buffers_held, (uint64_t)-1);
    cws_ur_deliver(l, d->conn, d->bid, d->res);
}

/* Keeps a completion of c's for a later turn; the first one also cancels c's
 * recv, so the rest of its data waits in the kernel (TCP back-pressure on the
 * flooding peer alone) instead of in the loop's shared buffers. */
static int cws_ur_defer(cws_loop *l, cws_conn *c, unsigned bid, int res) {
    cws_uring *u = l->be;
    if (u->ndeferred == u->deferred_cap && cws_ur_grow((void **)&u->deferred, &u->deferred_cap, sizeof *u->deferred) < 0)
        return -1;
    cws_udeferred d = {c, NULL, res, (uint16_t)bid, 0};
    if (bid != CWS_UR_NO_BUF) CWS_STAT_ADD(l, receive_buffers_held, 1);
    /* (Out of memory for the copy: it waits in its buffer.) */
    if ((c->flags & CWS_CF_PAUSED) && cws_ur_move_out(l, &d) == -EMSGSIZE) {
        CWS_STAT_ADD(l, receive_buffers_held, (uint64_t)-1); /* the caller recycles it */
        return -EMSGSIZE;
    }
    u->deferred[u->ndeferred++] = d;
    if (!(c->flags & CWS_CF_PAUSED)) u->deferred_ready = 1;
    CWS_STAT_ADD(l, input_deferred, 1);
    c->be_inflight++; /* the deferred completion keeps c alive */
    c->be_flags |= CWS_UR_DEFERRING;
    if ((c->be_flags & (CWS_UR_THROTTLED | CWS_UR_RECV_ARMED)) == CWS_UR_RECV_ARMED) {
        struct io_uring_sqe *sqe = cws_ur_sqe(u);
        if (sqe) {
            io_uring_prep_cancel64(sqe, CWS_UD(c, CWS_UD_RECV), 0);
            io_uring_sqe_set_data64(sqe, CWS_UD_IGNORE);
            c->be_flags |= CWS_UR_THROTTLED;
        }
    }
    return 0;
}

/* Counts res bytes of input against c's budget for this turn. */
static void cws_ur_charge(cws_uring *u, cws_conn *c, int res) {
    if (res <= 0) return;
    if (!c->be_turn_bytes) {
        if (u->ntouched == u->touched_cap &&
            cws_ur_grow((void **)&u->touched, &u->touched_cap, sizeof *u->touched) < 0)
            return; /* not remembered: its budget is simply not charged */
        u->touched[u->ntouched++] = c;
    }
    c->be_turn_bytes += (uint32_t)res;
}

/* The turn's input is over: every budget is fresh for the next. Before the
 * turn's end frees connections (the list would point at freed ones). */
static void cws_ur_reset_budgets(cws_uring *u) {
    for (uint32_t i = 0; i < u->ntouched; i++) u->touched[i]->be_turn_bytes = 0;
    u->ntouched = 0;
}

/* A new turn: the deferred completions run first, in order, each connection
 * again within its budget. A connection none of whose completions still waits
 * reads again. */
static void cws_ur_run_deferred(cws_loop *l) {
    cws_uring *u = l->be;
    uint32_t n = u->ndeferred;
    if (!n) return;
    /* Which run now: a connection's completions up to its budget; after the
     * first one that must wait, all the rest of that connection's (order). */
    for (uint32_t i = 0; i < n; i++) {
        cws_udeferred *d = &u->deferred[i];
        cws_conn *c = d->conn;
        d->keep = c->state != CWS_CONN_DEAD && ((c->be_flags & CWS_UR_KEPT) || (c->flags & CWS_CF_PAUSED) ||
                                                 c->be_turn_bytes >= cws_read_budget(c));
        if (d->keep) c->be_flags |= CWS_UR_KEPT;
        else if (d->bid != CWS_UR_NO_BUF) cws_ur_charge(u, c, d->res);
    }
    uint32_t kept = 0;
    for (uint32_t i = 0; i < n; i++) {
        cws_udeferred d = u->deferred[i];
        cws_conn *c = d.conn;
        if (c->state != CWS_CONN_DEAD && (d.keep || (c->flags & CWS_CF_PAUSED))) {
            /* A message just delivered may have paused c: the rest of its
             * input waits from here on (and stays behind this, in order).
             * (Out of memory for the copy: it waits in its buffer.) Past
             * the bound, c closes and this goes (below, as c's is dead). */
            if (!(c->flags & CWS_CF_PAUSED) || cws_ur_move_out(l, &d) != -EMSGSIZE) {
                c->be_flags |= CWS_UR_DEFERRING | CWS_UR_KEPT;
                u->deferred[kept++] = d;
                continue;
            }
            cws_conn_eof(l, c, EMSGSIZE);
        }
        cws_ur_deliver_kept(l, &d);
        c->be_inflight--;
        if ((c->be_flags & (CWS_UR_DEFERRING | CWS_UR_KEPT)) == CWS_UR_DEFERRING) {
            /* Nothing of c's is kept: it is through its backlog. */
            c->be_flags &= (uint8_t)~CWS_UR_DEFERRING;
            /* (A message just delivered may have paused it: then it stays throttled.) */
            if ((c->be_flags & CWS_UR_THROTTLED) && !(c->flags & CWS_CF_PAUSED)) {
                c->be_flags &= (uint8_t)~CWS_UR_THROTTLED;
                if (c->state != CWS_CONN_DEAD && !(c->be_flags & CWS_UR_RECV_ARMED)) cws_ur_arm_recv(l, c);
            }
        }
        cws_ur_maybe_release(l, c);
    }
    u->ndeferred = kept;
    u->deferred_ready = 0;
    for (uint32_t i = 0; i < kept; i++) {
        cws_conn *c = u->deferred[i].conn;
        c->be_flags &= (uint8_t)~CWS_UR_KEPT;
        if (!(c->flags & CWS_CF_PAUSED)) u->deferred_ready = 1;
    }
}

/* Paused: cancel the recv (what the kernel already completed waits in the
 * deferred list, in order) and keep it from being armed again. Resumed: the
 * deferred input runs next turn, and the recv is armed once it has. */
static void cws_ur_conn_reading(cws_loop *l, cws_conn *c) {
    cws_uring *u = l->be;
    if (c->flags & CWS_CF_PAUSED) {
        if ((c->be_flags & (CWS_UR_THROTTLED | CWS_UR_RECV_ARMED)) == CWS_UR_RECV_ARMED) {
            struct io_uring_sqe *sqe = cws_ur_sqe(u);
            if (!sqe) {
                cws_conn_eof(l, c, ENOMEM);
                return;
            }
            io_uring_prep_cancel64(sqe, CWS_UD(c, CWS_UD_RECV), 0);
            io_uring_sqe_set_data64(sqe, CWS_UD_IGNORE);
        }
        c->be_flags |= CWS_UR_THROTTLED;
        return;
    }
    if (c->be_flags & CWS_UR_DEFERRING) {
        u->deferred_ready = 1; /* cws_ur_run_deferred re-arms after the backlog */
        return;
    }
    if (c->be_flags & CWS_UR_THROTTLED) {
        c->be_flags &= (uint8_t)~CWS_UR_THROTTLED;
        /* Armed still: its cancel is on the way and the recv is armed again when it completes. */
        if (!(c->be_flags & (CWS_UR_RECV_ARMED | CWS_UR_RECV_NOBUFS))) cws_ur_arm_recv(l, c);
    }
}

static void cws_ur_recv_done(cws_loop *l, cws_conn *c, struct io_uring_cqe *cqe) {
    cws_uring *u = l->be;
    int res = cqe->res;
    int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    if (!more) {
        c->be_flags &= (uint8_t)~CWS_UR_RECV_ARMED;
        c->be_inflight--;
    }
    unsigned bid = (cqe->flags & IORING_CQE_F_BUFFER) ? cqe->flags >> IORING_CQE_BUFFER_SHIFT : CWS_UR_NO_BUF;
    if (res == -ENOBUFS && bid == CWS_UR_NO_BUF) {
        /* Every buffer is in use: back-pressure, not an error. Re-arm at the
         * end of the turn, after this turn's buffers went back to the ring. */
        if (c->state != CWS_CONN_DEAD && !(c->be_flags & CWS_UR_RECV_NOBUFS)) {
            if (u->nrearm == u->rearm_cap && cws_ur_grow((void **)&u->rearm, &u->rearm_cap, sizeof *u->rearm) < 0) {
                cws_conn_eof(l, c, ENOMEM);
            } else {
                c->be_flags |= CWS_UR_RECV_NOBUFS;
                c->be_inflight++; /* the pending re-arm keeps c alive */
                u->rearm[u->nrearm++] = c;
            }
        }
        cws_ur_maybe_release(l, c);
        return;
    }
    int ended = bid == CWS_UR_NO_BUF && res == -ECANCELED; /* our cancel: nothing to deliver */
    if (!ended && c->state != CWS_CONN_DEAD &&
        ((c->be_flags & CWS_UR_DEFERRING) || (c->flags & CWS_CF_PAUSED) ||
         (bid != CWS_UR_NO_BUF && c->be_turn_bytes >= cws_read_budget(c)))) {
        /* Over budget, paused, or behind completions that are: a later turn. */
        int rc = cws_ur_defer(l, c, bid, res);
        if (rc < 0) {
            if (bid != CWS_UR_NO_BUF) cws_ur_recycle(u, bid);
            cws_conn_eof(l, c, -rc); /* ENOMEM, or EMSGSIZE: more kept than a message */
        }
    } else if (!ended) {
        if (bid != CWS_UR_NO_BUF && c->state != CWS_CONN_DEAD) cws_ur_charge(u, c, res);
        cws_ur_deliver(l, c, bid, res);
    }
    if (!more && !(c->be_flags & (CWS_UR_RECV_ARMED | CWS_UR_THROTTLED)) && c->state != CWS_CONN_DEAD) {
        /* The kernel ended the multishot (it does when the CQ overflows or a
         * buffer ran out): arm it again. A throttled connection re-arms when
         * its deferred input has run. */
        cws_ur_arm_recv(l, c);
    }
    cws_ur_maybe_release(l, c);
}

static void cws_ur_write_done(cws_loop *l, cws_conn *c, int res) {
    c->flags &= (uint16_t)~CWS_CF_WANT_WRITE;
    c->qsending = 0;
    c->be_inflight--;
    if (c->state != CWS_CONN_DEAD) {
        /* What queued meanwhile goes at the turn's end, in one send with
         * whatever the rest of this turn's completions (a publisher's next
         * messages) queue for it. */
        if (res >= 0) {
            cws_conn_wrote(l, c, (size_t)res);
            if (c->qcount && c->state != CWS_CONN_DEAD) cws_conn_mark_dirty(l, c);
        } else if (res != -EINTR && res != -EAGAIN) {
            cws_conn_eof(l, c, -res); /* EPIPE, ECONNRESET, ... */
        } else {
            cws_conn_mark_dirty(l, c);
        }
    }
    cws_ur_maybe_release(l, c);
}

static void cws_ur_cqe(cws_loop *l, struct io_uring_cqe *cqe) {
    cws_uring *u = l->be;
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    switch (CWS_UD_KIND(ud)) {
    case CWS_UD_ACCEPT: {
        unsigned k = CWS_UD_LISTENER(ud);
        if (cqe->res >= 0) cws_loop_accepted(l, cqe->res, k);
        else cws_loop_accept_failed(l, -cqe->res); /* EMFILE and the like pause us */
        if (!(cqe->flags & IORING_CQE_F_MORE)) {
            u->accepting[k] = 0;
            /* Ended (an error, or cancelled): re-arm unless paused or stopping. */
            if (l->stopping) cws_ur_stop_accept(l);
            else if (!l->accept_paused) cws_ur_arm_accept(l, k);
        }
        break;
    }
    case CWS_UD_WAKE:
        cws_loop_drain_inbox(l);
        cws_ur_arm_wake(l);
        break;
    case CWS_UD_RECV:
        cws_ur_recv_done(l, CWS_UD_PTR(ud), cqe);
        break;
    case CWS_UD_SEND:
        cws_ur_write_done(l, CWS_UD_PTR(ud), cqe->res);
        break;
    case CWS_UD_CANCEL: {
        cws_conn *c = CWS_UD_PTR(ud);
        c->be_inflight--;
        cws_ur_maybe_release(l, c);
        break;
    }
    case CWS_UD_SENDMSG: {
        cws_usend *s = CWS_UD_PTR(ud);
        cws_conn *c = s->conn;
        if (s->gather) cws_ur_gather_give(l, s->gather);
        s->gather = NULL;
        s->next = u->free_sends;
        u->free_sends = s;
        u->nfree_sends++;
        cws_ur_write_done(l, c, cqe->res);
        break;
    }
    default:
        break;
    }
}

/* The contexts of a burst were allocated between the send-queue rings it
 * grew, and the 256 kept pin heap pages that glibc does not give back while
 * anything on them lives: a 2,000-member room's join burst left 8 KB of freed
 * heap per member once idle (5,000: 7.3 KB; epoll: 2 KB). malloc_trim returns
 * the free pages (3.1 and 2.0 KB per member after it) but takes 0.3-3 ms of
 * the loop on that heap, so a loop trims at most once per
 * CWS_UR_HEAP_TRIM_MS, after a burst's contexts were freed. */
static void cws_ur_trim_heap(cws_loop *l) {
#ifdef __GLIBC__
    cws_uring *u = l->be;
    if (!u->heap_trim_wanted) return;
    if (u->heap_trimmed && l->now_ms - u->heap_trimmed_ms < CWS_UR_HEAP_TRIM_MS) return;
    malloc_trim(0);
    u->heap_trim_wanted = 0;
    u->heap_trimmed = 1;
    u->heap_trimmed_ms = l->now_ms;
#else
    (void)l;
#endif
}

/* Once a tick: the contexts no send needed for CWS_UR_SENDS_QUIET_TICKS
 * whole ticks (the free list never went below them), down to
 * CWS_UR_SENDS_KEEP, go back to the allocator. */
static void cws_ur_trim_sends(cws_loop *l) {
    cws_uring *u = l->be;
    if (u->sends_tick == l->tick) return;
    u->sends_tick = l->tick;
    cws_ur_trim_heap(l);
    uint32_t low = u->sends_low;
    u->sends_low = u->nfree_sends;
    if (low <= CWS_UR_SENDS_KEEP) {
        u->sends_quiet = 0;
        return;
    }
    if (++u->sends_quiet < CWS_UR_SENDS_QUIET_TICKS) return;
    for (uint32_t n = low - CWS_UR_SENDS_KEEP; n && u->free_sends; n--) {
        cws_usend *s = u->free_sends;
        u->free_sends = s->next;
        u->nfree_sends--;
        free(s);
        CWS_STAT_ADD(l, send_contexts, (uint64_t)-1);
    }
    u->sends_low = u->nfree_sends;
    u->sends_quiet = 0;
    cws_ur_gathers_release(l);
    u->heap_trim_wanted = 1;
}

static void cws_ur_run(cws_loop *l) {
    cws_uring *u = l->be;
    /* The raw syscall: the installed liburing.so predates io_uring_enable_rings. */
    int rc = (int)syscall(__NR_io_uring_register, u->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    if (rc < 0) rc = -errno;
    int err = 0;
    if (rc == 0) u->br = cws_ur_buf_ring(&u->ring, CWS_UR_BUFS, CWS_UR_BGID, &err);
    if (rc < 0 || !u->br) {
        cws_loop_started(l, rc < 0 ? rc : err);
        return;
    }
    for (unsigned i = 0; i < CWS_UR_BUFS; i++)
        io_uring_buf_ring_add(u->br, u->bufs + (size_t)i * CWS_UR_BUF_SIZE, CWS_UR_BUF_SIZE, (unsigned short)i,
                              io_uring_buf_ring_mask(CWS_UR_BUFS), (int)i);
    io_uring_buf_ring_advance(u->br, CWS_UR_BUFS);
    for (unsigned k = 0; k < CWS_MAX_LISTENERS; k++) cws_ur_arm_accept(l, k);
    cws_ur_arm_wake(l);
    cws_loop_started(l, 0);
    int timeout = cws_loop_turn(l);
    while (!cws_loop_done(l)) {
        struct __kernel_timespec ts = {.tv_sec = timeout / 1000, .tv_nsec = (long long)(timeout % 1000) * 1000000};
        struct io_uring_cqe *cqe;
        /* Completions kept from the last turn: collect new ones (with
         * DEFER_TASKRUN only an enter that asks for events posts them, so the
         * other connections are heard), but do not sleep. */
        rc = u->deferred_ready ? io_uring_submit_and_get_events(&u->ring)
                          : io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
        if (cws_loop_fault_wait(l)) rc = -EIO;
        if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY) {
            /* The ring is unusable. Tear it down first: that ends every
             * request, so no descriptor is named by the kernel any more and
             * the connections can be closed directly. */
            cws_ur_queue_exit(&u->ring);
            u->dead = 1;
            cws_loop_fail(l, "io_uring_submit_and_wait_timeout", -rc);
            return;
        }
        cws_ur_run_deferred(l);
        /* Every completion there is, not a CQ's worth: what overflowed is
         * flushed into the CQ by another enter (bounded: a turn's input is
         * bounded by the budgets, its sends by the connections). */
        for (int batch = 0; batch < 8; batch++) {
            unsigned head, n = 0;
            io_uring_for_each_cqe(&u->ring, head, cqe) {
                cws_ur_cqe(l, cqe);
                n++;
            }
            io_uring_cq_advance(&u->ring, n);
            if (!io_uring_cq_has_overflow(&u->ring) || u->dead) break;
            if (io_uring_get_events(&u->ring) < 0) break;
        }
        /* Buffers went back to the ring during this batch: re-arm the
         * connections that hit ENOBUFS. */
        uint32_t nr = u->nrearm;
        u->nrearm = 0;
        for (uint32_t i = 0; i < nr; i++) {
            cws_conn *c = u->rearm[i];
            c->be_flags &= (uint8_t)~CWS_UR_RECV_NOBUFS;
            c->be_inflight--;
            if (c->state != CWS_CONN_DEAD && !(c->be_flags & (CWS_UR_RECV_ARMED | CWS_UR_THROTTLED)))
                cws_ur_arm_recv(l, c);
            cws_ur_maybe_release(l, c);
        }
        cws_ur_reset_budgets(u);
        cws_ur_trim_sends(l);
        timeout = cws_loop_turn(l);
    }
    /* Let the kernel finish with everything before the ring goes away. */
    io_uring_submit(&u->ring);
}

const cws_backend_ops cws_uring_ops = {
    .name = "io_uring",
    .loop_init = cws_ur_init,
    .loop_run = cws_ur_run,
    .loop_fini = cws_ur_fini,
    .conn_start = cws_ur_conn_start,
    .conn_flush = cws_ur_conn_flush,
    .conn_close = cws_ur_conn_close,
    .stop_accept = cws_ur_stop_accept,
    .pause_accept = cws_ur_pause_accept,
    .conn_reading = cws_ur_conn_reading,
};
