/*
 * Private to the server engine: the structures and functions shared by its
 * files (engine_ids.c, engine_sendq.c, engine_send.c, engine_frames.c,
 * engine_request.c, engine_deflate.c, engine_close.c, engine_loop.c: the
 * connection state machine; engine_msg.c: framed buffers; engine_timer.c: the
 * timer wheel; engine_server.c: lifecycle) and the two I/O backends. Not
 * installed.
 *
 * Division of labour: the backend moves bytes and events (accepts, reads,
 * writes, wake-ups, the clock); every protocol decision lives in the shared files, so
 * epoll and io_uring behave the same.
 */
#ifndef CWS_ENGINE_INTERNAL_H
#define CWS_ENGINE_INTERNAL_H

#include "cws_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/uio.h>

typedef struct cws_loop cws_loop;
typedef struct cws_conn cws_conn;

/* ---- framed messages (engine_msg.c) ---------------------------------- */

/* Opcode of a message that carries raw bytes (an HTTP response), not a frame. */
#define CWS_MSG_RAW 0xFF
/* TLS records: what a TLS connection's queue holds ahead of the plaintext
 * messages not yet encrypted (engine_tls.c). */
#define CWS_MSG_SEALED 0xFE

struct cws_msg {
    _Atomic uint32_t refs;
    uint8_t opcode;     /* what the frame carries; CWS_MSG_RAW for HTTP bytes */
    uint8_t size_class; /* pool class it came from, or CWS_MSG_NO_CLASS */
    uint8_t hdr_len;    /* frame header bytes before the payload */
    uint8_t zbits;      /* a compressed variant: the window it was made with */
    size_t len;         /* bytes in data: header + payload */
    /* The same message compressed without context takeover, made by the first
     * loop that needs it and shared by every recipient whose negotiated window
     * is at least zbits. Points back at this message when compressing did not
     * make it smaller (then it goes out as is). Owned (one reference) unless
     * it points back. */
    _Atomic(cws_msg *) zvar;
    uint8_t data[];
};
#define CWS_MSG_NO_CLASS 0xFF
#define CWS_MSG_CLASSES 13 /* 256 B .. 1 MiB total allocation, powers of two */
#define CWS_MSG_POOL_CAP 512 /* free blocks kept per class per loop ... */
#define CWS_MSG_POOL_CLASS_BYTES (2u << 20) /* ... and at most 2 MiB of them (64 KiB: 32 blocks) */

/* Per-loop free lists: steady-state sends reuse blocks instead of malloc. */
typedef struct cws_msg_pool {
    cws_msg **free[CWS_MSG_CLASSES];
    uint32_t count[CWS_MSG_CLASSES];
} cws_msg_pool;

/* A message with room for len bytes (refs = 1); data is filled by the caller. */
cws_msg *cws_msg_alloc(size_t len);
/* A whole frame (server role, unmasked) of this payload. */
cws_msg *cws_msg_frame(uint8_t opcode, const void *payload, size_t len);
/* The same with RSV bits (CWS_RSV1: a compressed payload). */
cws_msg *cws_msg_frame_rsv(uint8_t opcode, uint8_t rsv, const void *payload, size_t len);
void cws_msg_pool_free(cws_msg_pool *p);

/* Send-queue entries a drained connection keeps (a larger ring is freed).
 * 32 (512 B): a fan-out burst of 16 publishes in flight queues 16 per
 * subscriber every turn, and with 8 each of 10,000 rings was freed and grown
 * again (three mallocs) every turn. An idle connection still keeps none: the
 * ring goes once the idle ping is written. */
#define CWS_SENDQ_KEEP 32

/* One queued message and how much of it has been written. */
typedef struct cws_sendq_entry {
    cws_msg *msg;
    size_t off;
} cws_sendq_entry;

/* ---- connections -------------------------------------------------------- */

enum cws_conn_state {
    CWS_CONN_HANDSHAKE = 0, /* reading the request head */
    CWS_CONN_OPEN,          /* WebSocket frames both ways */
    CWS_CONN_CLOSING,       /* a close frame (or an HTTP answer) is queued / sent */
    CWS_CONN_DRAINING,      /* our side is shut down; discard input until EOF */
    CWS_CONN_DEAD,          /* finished; waiting for the backend to let go */
    CWS_CONN_DEFERRED,      /* the request head is in; the application answers later
                               (engine_deferred.c); its socket is not read meanwhile */
};

/* permessage-deflate, as negotiated (cws_conn.pmd). */
enum cws_pmd_flags {
    CWS_PMD_ON = 1 << 0,
    CWS_PMD_SERVER_NCT = 1 << 1, /* server_no_context_takeover: shared compressor */
    CWS_PMD_CLIENT_NCT = 1 << 2, /* client_no_context_takeover: shared decompressor */
};

enum cws_conn_flags {
    CWS_CF_WANT_WRITE = 1 << 0,   /* backend waits for writability */
    CWS_CF_DIRTY = 1 << 1,        /* on the loop's flush list */
    CWS_CF_CLOSE_SENT = 1 << 2,   /* a close frame is queued: send nothing else */
    CWS_CF_CLOSE_RECV = 1 << 3,   /* the peer's close frame arrived */
    CWS_CF_SHUT_AFTER = 1 << 4,   /* shut our side down once the queue is written */
    CWS_CF_OPENED = 1 << 5,       /* on_open was called: on_close is owed */
    CWS_CF_PING_SENT = 1 << 6,    /* idle ping out, waiting for any traffic */
    CWS_CF_READ_DONE = 1 << 7,    /* stop interpreting input (after failing) */
    CWS_CF_REPORTED = 1 << 8,     /* the id is stale and on_close (if owed) ran */
    CWS_CF_ZMSG = 1 << 9,         /* the data message being received is compressed */
    CWS_CF_PAUSED = 1 << 10,      /* read_holds > 0: the application stopped reading */
    CWS_CF_WANT_DRAIN = 1 << 11,  /* cws_request_drain: on_drain once the queue is down to send_low_water */
    CWS_CF_RMSG = 1 << 12,        /* rbuf is the payload of a pooled message block (cws_rmsg_start) */
    CWS_CF_QONCE = 1 << 13,       /* the send ring carried only the 101: it goes once drained */
};

/* What few connections use: compression (made at an upgrade that
 * negotiated it), a control frame split across reads, the peer's close
 * reason. Out of line, an idle connection's chunk is 32 bytes smaller. */
typedef struct cws_conn_cold {
    /* Compression contexts, allocated on first use: zdef only with server
     * context takeover; zinf with client context takeover, or lent by the
     * loop while a compressed message arrives in pieces. */
    cws_deflater *zdef;
    cws_inflater *zinf;
    uint8_t *ctrl;           /* a control frame split across reads (125 B) */
    uint8_t *reason;         /* the peer's close reason, for on_close (reason_len bytes) */
    uint32_t zin;            /* compressed bytes of the message being inflated in pieces */
    uint8_t z_sbits;         /* negotiated server / client window bits */
    uint8_t z_cbits;
} cws_conn_cold;

/* Every open connection has one, so the fields are placed to leave no
 * padding: 216 bytes, a 224-byte malloc chunk. */
struct cws_conn {
    int fd;
    uint32_t slot;
    uint32_t gen;
    uint8_t state;
    uint8_t reason_len;
    uint16_t flags;
    uint16_t close_code;     /* reported to on_close */
    uint8_t be_flags;        /* backend private */
    uint8_t pmd;             /* cws_pmd_flags; 0 = no compression (else cold is set) */
    uint16_t be_inflight;    /* backend private: operations the kernel holds */
    uint16_t read_holds;     /* cws_pause_reading calls not yet resumed */
    uint32_t pings;          /* pings in the second that began at ping_window_ms */
    uint32_t ping_window_ms; /* loop clock (now_ms), truncated */
    cws_conn *timer_next, *timer_prev;
    uint32_t timer_tick;     /* deadline in loop ticks (when linked) */
    uint32_t active_tick;    /* last tick with input */
    /* The record lives only while CWS_CONN_DEFERRED, user only from the accept
     * on: one pointer serves both, so deferral costs idle connections nothing. */
    union {
        void *user;
        struct cws_deferred *deferred;
    };
    cws_parser parser;
    cws_utf8_state utf8;
    uint32_t rlen, rcap;     /* rbuf: request head, then message reassembly */
    uint32_t qhead;
    uint8_t *rbuf;
    cws_conn_cold *cold;     /* NULL until something above needs it (cws_conn_cold_get) */
    uint32_t qcount, qcap;
    uint32_t qsending;       /* entries at the head that a write in flight still reads (io_uring) */
    uint32_t be_turn_bytes;  /* backend private: input taken this turn (io_uring's read budget) */
    uint32_t be_held_bytes;  /* backend private: kept input copied while stopped (io_uring) */
    cws_sendq_entry *q;      /* ring of qcap entries, allocated on first send */
    uint64_t qbytes;         /* unwritten bytes in q */
    struct cws_slot *slotp;  /* where qbytes is published for other threads (cws_buffered_amount) */
    struct cws_tls_conn *tls; /* NULL on a plain listener (engine_tls.c) */
};
/* 8 bytes more and every connection's malloc chunk grows by 16. */
_Static_assert(sizeof(struct cws_conn) <= 216, "cws_conn outgrew its 224-byte malloc chunk");

/* c's cold fields, made (zeroed) on first need; NULL when out of memory. */
static inline cws_conn_cold *cws_conn_cold_get(cws_conn *c) {
    if (!c->cold) c->cold = calloc(1, sizeof *c->cold);
    return c->cold;
}

/* ---- loops and the server --------------------------------------------- */

/* A loop listens on cfg.port, and on cfg.tls_port too when TLS sits beside
 * plain (cws_server_config.tls_beside_plain). */
enum { CWS_LISTENER_MAIN = 0, CWS_LISTENER_TLS = 1, CWS_MAX_LISTENERS = 2 };

/* A command from another thread to a loop. */
typedef struct cws_cmd {
    cws_conn_id id;
    cws_msg *msg;    /* owned reference (NULL for a reading command) */
    uint16_t close_code; /* nonzero: msg is a close frame with this code */
    uint8_t reading;     /* CWS_CMD_PAUSE / RESUME / DRAIN; 0: a send or a close;
                            CWS_CMD_DEFERRED_*: an answer to a deferred request */
} cws_cmd;

enum { CWS_CMD_PAUSE = 1, CWS_CMD_RESUME = 2, CWS_CMD_DRAIN = 3, CWS_CMD_DEFERRED_ACCEPT = 4, CWS_CMD_DEFERRED_RESPOND = 5 };

typedef struct cws_slot {
    cws_conn *conn;          /* loop thread only */
    _Atomic uint32_t gen;    /* read by any thread to reject stale ids early */
    /* The generation of this slot's connection while its request is deferred
     * and unanswered; 0 once an answer is claimed (by any thread, or by the
     * loop itself for a timeout or a stop): exactly one answer wins. Fills
     * what was padding. */
    _Atomic uint32_t deferred_gen;
    /* What waits for this slot's connection, for any thread to read
     * (cws_buffered_amount): bytes of data messages other threads posted and
     * the loop has not taken from its inbox yet (posted - taken; both only
     * grow, so a stale id's bytes still balance once the loop takes them),
     * plus the send queue's unwritten bytes as the loop last published them. */
    _Atomic uint64_t posted, taken, queued;
} cws_slot;

#define CWS_SLOT_CHUNK_BITS 12
#define CWS_SLOT_CHUNK (1u << CWS_SLOT_CHUNK_BITS)
#define CWS_SLOT_BITS 24
#define CWS_MAX_CHUNKS ((1u << CWS_SLOT_BITS) / CWS_SLOT_CHUNK)
#define CWS_WHEEL_SIZE 1024

typedef struct cws_loop_stats {
    _Atomic uint64_t connections, accepted, messages_in, bytes_in, messages_out, bytes_out, dropped;
    _Atomic uint64_t sockets; /* accepted and not yet freed (the kernel may still hold them) */
    _Atomic uint64_t accept_errors, accept_pauses, refused_full;
    _Atomic uint64_t failed; /* 1 once the loop has died (cws_loop_fail) */
    _Atomic uint64_t inflate_refused, input_deferred, pings_refused;
    _Atomic uint64_t inbox_refused; /* cross-thread sends refused at max_inbox_bytes */
    _Atomic uint64_t handshakes_failed;
    _Atomic uint64_t deferred; /* upgrade requests waiting for a deferred answer */
    _Atomic uint64_t receive_buffers_held, input_held_bytes; /* io_uring's kept input */
    _Atomic uint64_t tls_handshakes, tls_handshakes_failed, tls_kernel_offloads;
    _Atomic uint64_t socket_writes; /* sendmsg / send calls (epoll) and send requests (io_uring) */
    _Atomic uint64_t in_place_sends; /* sends of a delivered message's own block (cws_delivered_frame) */
    _Atomic uint64_t send_contexts;  /* io_uring's sendmsg contexts held (a gauge) */
    _Atomic uint64_t send_rings;     /* connections' send-queue rings allocated (a gauge) */
    _Atomic uint64_t send_contexts_made; /* io_uring's sendmsg contexts malloc'd (a counter) */
    _Atomic uint64_t send_gather_bytes;      /* io_uring's gather buffers held (a gauge) */
    _Atomic uint64_t send_gather_bytes_peak; /* the most send_gather_bytes has been (a high-water mark) */
} cws_loop_stats;

typedef struct cws_backend_ops cws_backend_ops;

struct cws_loop {
    cws_server *srv;
    uint32_t index;
    /* [CWS_LISTENER_MAIN] on cfg.port, [CWS_LISTENER_TLS] on cfg.tls_port
     * when TLS sits beside plain; -1 where none. */
    int listen_fd[CWS_MAX_LISTENERS];
    int wake_fd;               /* eventfd: other threads' commands */
    pthread_t thread;
    int joined;                /* pthread_join done (cws_server_join) */
    void *be;                  /* backend state */

    /* connections */
    _Atomic(cws_slot *) chunks[CWS_MAX_CHUNKS];
    uint32_t nslots;           /* slots ever handed out */
    uint32_t *free_slots;
    uint32_t nfree, free_cap;
    uint32_t live;             /* conns not yet freed */
    cws_conn *graveyard;       /* released conns, freed at the end of the turn */

    /* flush list: ids of connections with queued output */
    cws_conn_id *dirty;
    uint32_t ndirty, dirty_cap;

    /* inbox from other threads */
    pthread_mutex_t inbox_lock;
    cws_cmd *inbox, *inbox_spare;
    uint32_t ninbox, inbox_cap, spare_cap;
    /* Bytes the inbox holds (its commands, and each message once per post),
     * bounded by max_inbox_bytes (under inbox_lock). */
    uint64_t inbox_bytes;
    _Atomic int wake_pending;
    int dead;                  /* the loop died: refuse commands (under inbox_lock) */

    /* time */
    uint64_t start_ms;
    uint32_t tick;             /* ticks processed */
    uint64_t now_ms;           /* since start_ms */
    cws_conn *wheel[CWS_WHEEL_SIZE];
    cws_conn *timer_due;       /* entries of the bucket being fired (engine_timer.c) */

    int stopping;
    /* 0 while starting, 1 once running, 2 once its thread is done, -errno if
     * it could not start (read by cws_server_start and cws_server_wake_loop
     * on other threads). */
    _Atomic int run_state;
    uint8_t turn_again;        /* cws_server_turn_again: the next wait does not sleep */
    uint8_t fault_wait;        /* tests: the next wait after a connection opens fails */
    uint8_t fault_start;       /* tests: the loop fails to start */
    /* Accepting paused: out of descriptors (see cws_loop_accept_failed). */
    uint8_t accept_paused;
    uint8_t accept_episode;    /* failures since the last successful accept: logged once */
    uint32_t accept_retry_tick;
    uint8_t *rbuf;             /* receive buffer (epoll backend) */
    cws_http_request http;     /* scratch for request heads */
    cws_msg_pool pool;
    /* The block whose payload on_message is being handed (a one-frame
     * message gathered by cws_rmsg_start), for cws_send to queue itself;
     * NULL outside such a call. */
    cws_msg *delivering;
    /* permessage-deflate without context takeover: one compressor per window
     * size (index bits - 8) and a few idle decompressors, shared by every
     * connection of the loop; scratch for whole messages. */
    cws_deflater *zdef[8];
    cws_inflater *zinf_idle[4];
    uint32_t nzinf_idle;
    cws_buffer zbuf;
    /* TLS: records OpenSSL writes, until they become a queued message. */
    cws_buffer tls_out;
    cws_loop_stats stats;
} __attribute__((aligned(64)));

struct cws_server {
    cws_server_config cfg;
    const cws_backend_ops *ops;
    cws_loop *loops;
    uint32_t nloops;
    uint16_t port;
    uint32_t tick_ms;
    int started;
    _Atomic int stopping;
    /* CLOCK_MONOTONIC ms when a graceful stop force-closes what is left;
     * UINT64_MAX until the stop's deadline is set (read by the loops). */
    _Atomic uint64_t stop_deadline_ms;
    pthread_mutex_t join_lock;  /* one thread joins the loops (a stop from a callback hands it on) */
    /* TLS: the certificates new connections get (engine_tls.c); NULL: plain. */
    struct cws_tls_identities *tls;
    pthread_mutex_t tls_lock;   /* guards the tls pointer against a reload */
    /* Set at create, never changed: how many listeners a loop has, and
     * whether a connection accepted from each gets a session. */
    uint8_t nlisteners;
    uint8_t listener_tls[CWS_MAX_LISTENERS];
    uint16_t tls_port;          /* the TLS listener's bound port; 0 without TLS */
};

struct cws_backend_ops {
    const char *name;
    /* Creates the loop's ring / epoll instance and registers the listeners and wake_fd. */
    int (*loop_init)(cws_loop *l, char *err, size_t cap);
    void (*loop_run)(cws_loop *l);
    void (*loop_fini)(cws_loop *l);
    /* A new connection (fd already non-blocking): start reading. */
    int (*conn_start)(cws_loop *l, cws_conn *c);
    /* Write what is queued (may complete later; the backend calls cws_conn_wrote). */
    void (*conn_flush)(cws_loop *l, cws_conn *c);
    /* Stop all I/O and close the fd; call cws_conn_release once the kernel holds
     * nothing of this connection any more. */
    void (*conn_close)(cws_loop *l, cws_conn *c);
    /* Stop accepting on every listener (graceful shutdown). */
    void (*stop_accept)(cws_loop *l);
    /* Stop watching the listeners for a while (on = 1), or watch them again. */
    void (*pause_accept)(cws_loop *l, int on);
    /* CWS_CF_PAUSED just changed on c: stop reading its socket, or read it again. */
    void (*conn_reading)(cws_loop *l, cws_conn *c);
};

extern const cws_backend_ops cws_epoll_ops;
extern const cws_backend_ops cws_uring_ops;
/* 0 if io_uring works here with every operation the backend uses, else -errno
 * and a reason in why. disable (may be NULL) names steps to treat as missing,
 * for tests of the fallback (see cws_server_config.uring_disable). */
int cws_uring_probe(const char *disable, char *why, size_t cap);

/* The loop whose thread this is (NULL on other threads). */
extern __thread cws_loop *cws_current_loop;

#define CWS_RECV_BUF_SIZE (64 * 1024)
/* Bytes of one connection's input a loop turn takes (epoll: one recv of this
 * much; io_uring: CWS_UR_READ_BUDGET). Every other connection's replies wait
 * for the turn to end, and with tiny messages each byte is handler work: 64 KiB
 * of 45-byte envelopes is ~1,500 handler calls and held a canary on the same
 * loop ~110 ms p99 under a one-client flood (issue 12). */
#ifndef CWS_READ_BUDGET
#define CWS_READ_BUDGET (16 * 1024)
#endif
#define CWS_IOV_MAX 64

/* ---- engine entry points for the backends --------------------------------- */
/* A connection accepted from l->listen_fd[listener]. */
void cws_loop_accepted(cws_loop *l, int fd, unsigned listener);
/* accept failed with err: 1 if it is a shortage (descriptors, memory) that
 * retrying at once cannot cure, after pausing the listener; 0 otherwise. */
int cws_loop_accept_failed(cws_loop *l, int err);
/* Input for c; data is writable (it is unmasked in place) and valid only
 * during the call. */
void cws_conn_input(cws_loop *l, cws_conn *c, uint8_t *data, size_t len);
/* c's input budget for the rest of a turn: CWS_READ_BUDGET, or up to
 * CWS_RECV_BUF_SIZE while a frame bigger than that budget is being reassembled
 * (rbuf is reserved for the whole frame; those bytes are copies, not handler
 * calls: 16 KiB turns cost 64 KiB messages ~25% more CPU on epoll). Not for
 * any partial message: a flood of tiny ones ends most reads mid-message. */
static inline uint32_t cws_read_budget(const cws_conn *c) {
    return c->state == CWS_CONN_OPEN && c->rlen && c->rcap > CWS_READ_BUDGET ? CWS_RECV_BUF_SIZE : CWS_READ_BUDGET;
}
/* EOF (err 0) or a socket error. */
void cws_conn_eof(cws_loop *l, cws_conn *c, int err);
/* Fills iov from the send queue; returns the count (0 if nothing is queued). */
int cws_conn_iov(const cws_conn *c, struct iovec *iov, int max);
/* The same, but runs of messages of at most `small` bytes are copied into
 * gather (cap bytes; NULL: none) and share one iovec, so the kernel copies
 * one contiguous span where it would take each tiny frame as a segment of
 * its own; once gather is full, messages take iovecs of their own. Stops when
 * the iovecs are used up; *entries (if not NULL): how many queue entries the
 * iovecs cover. */
/* engine_frames.c: the reassembly buffer. Frees it (or lets its message
 * block go), whichever it is. */
void cws_rbuf_free(cws_conn *c);
/* The delivering message (cws_loop.delivering) framed as opcode, if data and
 * len are its payload and it is (or can now be) framed so; else NULL. */
cws_msg *cws_delivered_frame(uint8_t opcode, const void *data, size_t len);
int cws_conn_gather_iov(const cws_conn *c, struct iovec *iov, int max, uint8_t *gather, size_t cap, size_t small,
                        uint32_t *entries);
/* n bytes of the queue were written: release finished messages and, when the
 * queue is empty, finish a pending shutdown. */
void cws_conn_wrote(cws_loop *l, cws_conn *c, size_t n);
/* The backend lets go of c: frees it and its slot. */
void cws_conn_release(cws_loop *l, cws_conn *c);
/* Resolves an id owned by this loop (NULL if stale). */
cws_conn *cws_loop_conn(cws_loop *l, cws_conn_id id);
/* Adds (pause = 1) or removes (0) a hold on reading c's socket; it is read
 * while no hold is left (loop thread). */
void cws_conn_hold_reading(cws_loop *l, cws_conn *c, int pause);
/* Reads c again whatever holds it (a close handshake needs the peer's frame). */
void cws_conn_force_reading(cws_loop *l, cws_conn *c);
/* Queues a command for l's thread and wakes it (any other thread). */
int cws_loop_post(cws_loop *l, cws_cmd cmd);
/* Commands from other threads; the backend calls it after a wake-up. */
void cws_loop_drain_inbox(cws_loop *l);
/* Advances the clock, runs due timers, flushes dirty connections. Returns the
 * wait timeout in ms until the next tick. */
int cws_loop_turn(cws_loop *l);
/* The send queue's size changed: publish it to other threads and, when an
 * application waits for it to drain, tell it once it is low enough. */
void cws_conn_queue_changed(cws_loop *l, cws_conn *c);
/* cws_request_drain on the loop thread. */
void cws_conn_want_drain(cws_loop *l, cws_conn *c);
/* Wakes the loop's thread to read its inbox (any thread). */
void cws_loop_wake(cws_loop *l);
/* The loop thread's body. */
void *cws_loop_thread(void *arg);
/* The backend is ready (rc 0) or could not start (-errno): tells
 * cws_server_start, which waits for every loop. */
void cws_loop_started(cws_loop *l, int rc);
/* Is name one of the comma-separated names in list (NULL: none)? For the
 * test knobs uring_disable and fault_inject (engine_server.c). */
int cws_list_has(const char *list, const char *name);
/* Tests (fault_inject "wait:N"): 1 when this wait must be treated as failed. */
int cws_loop_fault_wait(const cws_loop *l);
/*
 * The backend's wait failed for good. Called by the backend after it let go
 * of its kernel state (so no request names a descriptor any more): closes the
 * listener, so the kernel stops giving this loop connections, ends every
 * connection (on_close with 1006), and refuses further cross-thread sends.
 */
void cws_loop_fail(cws_loop *l, const char *what, int err);
/* 1 when the loop has finished a graceful stop. */
int cws_loop_done(const cws_loop *l);

/* ---- ids (engine_ids.c) ------------------------------------------------ */

/* id = generation (32) | loop (8) | slot (24). The generation starts at 1, so
 * an id is never 0, and it changes when a connection ends, so a stale id
 * never reaches the slot's next connection. */
static inline cws_conn_id cws_make_id(uint32_t loop, uint32_t slot, uint32_t gen) {
    return ((uint64_t)gen << 32) | ((uint64_t)loop << CWS_SLOT_BITS) | slot;
}
static inline uint32_t cws_id_loop(cws_conn_id id) { return (uint32_t)(id >> CWS_SLOT_BITS) & 0xFF; }
static inline uint32_t cws_id_slot(cws_conn_id id) { return (uint32_t)id & ((1u << CWS_SLOT_BITS) - 1); }
static inline uint32_t cws_id_gen(cws_conn_id id) { return (uint32_t)(id >> 32); }

static inline cws_conn_id cws_conn_id_of(const cws_loop *l, const cws_conn *c) {
    return cws_make_id(l->index, c->slot, c->gen);
}

static inline cws_slot *cws_slot_at(const cws_loop *l, uint32_t slot) {
    cws_slot *chunk = atomic_load_explicit(&l->chunks[slot >> CWS_SLOT_CHUNK_BITS], memory_order_acquire);
    return chunk ? &chunk[slot & (CWS_SLOT_CHUNK - 1)] : NULL;
}

#define CWS_STAT_ADD(l, field, n) \
    atomic_store_explicit(&(l)->stats.field, \
                          atomic_load_explicit(&(l)->stats.field, memory_order_relaxed) + (n), \
                          memory_order_relaxed)

/* One HTTP request while on_request runs (engine_request.c). */
struct cws_request {
    cws_loop *loop;
    cws_conn *conn;
    const cws_upgrade_info *upgrade;
    int answered;      /* respond or accept was called */
    int accepted;
    int head_only;     /* a HEAD request: answers carry no body */
    char remote[64];
    /* Bytes the client sent after the head (it did not wait for the 101):
     * kept by cws_request_defer, since they are in scratch buffers. */
    uint8_t *rest[2];
    size_t rest_len[2];
    int deferred;      /* cws_request_defer was called */
};

/* ---- shared between the engine's files ------------------------------- */
/* engine_ids.c: ids and slots */
int cws_id_check(cws_server *s, cws_conn_id id, cws_loop **out);
int cws_slot_alloc(cws_loop *l, uint32_t *out);
void cws_slot_free(cws_loop *l, uint32_t slot);
/* engine_sendq.c: send queue */
void cws_sendq_clear(cws_conn *c);
/* Frees c's (empty or cleared) send ring, if it has one. */
void cws_sendq_free_ring(cws_loop *l, cws_conn *c);
int cws_sendq_push(cws_loop *l, cws_conn *c, cws_msg *m);
/* Puts c on the loop's flush list: its queue is written at this turn's end
 * (at once where the list cannot grow). */
void cws_conn_mark_dirty(cws_loop *l, cws_conn *c);
/* Puts m (a new reference) at queue position at (0 = head .. qcount = tail)
 * and marks c for a flush. 0 or -ENOMEM. */
int cws_sendq_insert(cws_loop *l, cws_conn *c, uint32_t at, cws_msg *m);
/* Once the queue has backed up (64 KiB), a pong that answers a newer ping
 * takes the place of an unsent pong at the queue's tail (RFC 6455 5.5.3 lets
 * a server answer only the most recent ping). 1 if it did; 0 if not backed
 * up, or the tail is something else or is being written. */
int cws_sendq_replace_tail_pong(cws_conn *c, cws_msg *pong);
/* engine_deflate.c: permessage-deflate */
cws_msg *cws_conn_compress(cws_loop *l, cws_conn *c, cws_msg *m);
void cws_conn_zfree(cws_loop *l, cws_conn *c);
int cws_conn_zinput(cws_loop *l, cws_conn *c, uint8_t op, const cws_frame_event *ev);
/* engine_close.c: closing */
void cws_conn_close_with(cws_loop *l, cws_conn *c, uint16_t code, int shut_after);
void cws_conn_fail(cws_loop *l, cws_conn *c, uint16_t code);
void cws_conn_finish(cws_loop *l, cws_conn *c);
void cws_conn_report(cws_loop *l, cws_conn *c);
void cws_conn_send_close(cws_loop *l, cws_conn *c, cws_msg *frame, int shut_after);
/* Frees the connections released this turn; returns how many. */
uint32_t cws_loop_bury(cws_loop *l);
/* engine_send.c: sending on the owning loop */
int cws_loop_send_frame(cws_loop *l, cws_conn *c, cws_msg *m);
void cws_loop_close(cws_loop *l, cws_conn *c, cws_msg *frame, uint16_t code);
int cws_loop_send(cws_loop *l, cws_conn *c, cws_msg *m);
/* engine_frames.c: frame input */
void cws_conn_deliver(cws_loop *l, cws_conn *c, uint8_t opcode, const void *data, size_t len);
void cws_conn_frames(cws_loop *l, cws_conn *c, uint8_t *p, size_t len);
int cws_rbuf_reserve(cws_conn *c, uint64_t extra);
/* engine_request.c: the request head */
void cws_conn_http_error(cws_loop *l, cws_conn *c, int status);
/* Queues an HTTP answer (raw bytes) and closes once it is written. */
void cws_conn_answer(cws_loop *l, cws_conn *c, const void *bytes, size_t len);
void cws_conn_answer_msg(cws_loop *l, cws_conn *c, cws_msg *m);
/* What is queued is the last: close once it is written, read no more. */
void cws_conn_close_after_queue(cws_loop *l, cws_conn *c);
/* Plaintext input (after TLS, if any): the request head, frames. */
void cws_conn_plaintext(cws_loop *l, cws_conn *c, uint8_t *data, size_t len);
/* "ip:port" / "[ipv6]:port" of fd's peer ("" if unknown). */
void cws_format_peer(int fd, char *out, size_t cap);
/* A whole HTTP response (head_only: without the body, as for HEAD); NULL
 * when out of memory. Any thread. */
cws_msg *cws_http_response_msg(int status, const char *content_type, const char *headers, const void *body,
                               size_t body_len, int head_only);
/* Queues the 101 and switches c to frames. ext: the negotiated
 * permessage-deflate response (NULL or "": none). 0, or -1 (out of memory). */
int cws_conn_upgrade(cws_loop *l, cws_conn *c, const void *key, size_t key_len, const char *protocol,
                     const char *ext, const cws_deflate_params *dp, void *user);
/* The upgrade is done: count it, start the idle timer, call on_open. */
void cws_conn_open(cws_loop *l, cws_conn *c);
/* engine_reading.c: c's holds or its state changed: read its socket or stop. */
void cws_conn_apply_reading(cws_loop *l, cws_conn *c);
/* engine_deferred.c: requests answered later (cws_request_defer) */
void cws_deferred_input(cws_loop *l, cws_conn *c, const uint8_t *data, size_t len);
/* The handshake timeout or a stop: answer 503 unless an answer is on its way. */
void cws_deferred_refuse(cws_loop *l, cws_conn *c);
/* From cws_conn_finish: 1 if c must live until the answer already on its way
 * arrives; 0 once its record is freed. */
int cws_deferred_end(cws_loop *l, cws_conn *c);
/* An answer from the inbox (c NULL when the connection is gone). */
void cws_deferred_command(cws_loop *l, cws_conn *c, const cws_cmd *cmd);

/* ---- TLS (engine_tls.c) ----------------------------------------------- */
int cws_tls_server_init(cws_server *s, const cws_tls_config *cfg, char *err, size_t cap);
void cws_tls_server_free(cws_server *s);
/* A new connection on a TLS listener gets its session (0, or -ENOMEM). */
int cws_tls_conn_new(cws_loop *l, cws_conn *c);
void cws_tls_conn_free(cws_conn *c);
/* Ciphertext from the socket: decrypts it and hands the plaintext on. */
void cws_tls_input(cws_loop *l, cws_conn *c, uint8_t *data, size_t len);
/* Before a write: encrypts the plaintext messages at the queue's tail into
 * records. 0, or -1 when the connection had to be finished. */
int cws_tls_seal(cws_loop *l, cws_conn *c);
/* The queue is written and our side is to be shut down: queues close_notify
 * first. 1 if it queued it (shut down once that is written), 0 if nothing is
 * owed. */
int cws_tls_close_notify(cws_loop *l, cws_conn *c);
const char *cws_tls_server_name(const cws_conn *c);
/* For the log and the counters: a handshake timed out, or a stream ended
 * without close_notify (nothing if c is not TLS). */
void cws_tls_timed_out(cws_loop *l, cws_conn *c);
void cws_tls_truncated(cws_loop *l, cws_conn *c);
/* The application's log (on_log), printf-style. */
void cws_log(cws_loop *l, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* 1 when the kernel encrypts what is written to c (kernel TLS): its queue's
 * plaintext goes to the socket as it is. */
int cws_tls_kernel_sends(const cws_conn *c);
/* cws_tls_kernel_offload_available, after asking the kernel to load the module. */
int cws_tls_kernel_offload_load(void);

/* ---- kernel TLS for sending (engine_tls_kernel.c) ----------------------- */
/* A TLS record's most plaintext. */
#define CWS_TLS_MAX_PLAINTEXT 16384
struct ssl_st;
typedef struct cws_tls_tx cws_tls_tx;
/* The server's application traffic secret from a key-log line
 * (SERVER_TRAFFIC_SECRET_0): 1 and the secret, or 0 for another line. */
int cws_tls_tx_secret(const char *line, uint8_t secret[48], size_t *len);
/* Hands the session's sending keys (from the secret) over: mode 1 to the
 * kernel (TCP_ULP "tls", TLS_TX), mode 2 to the emulation (*emulation, which
 * writes the records the kernel would). 0, or -1 with why. */
int cws_tls_tx_start(int fd, struct ssl_st *ssl, const uint8_t *secret, size_t secret_len, int mode,
                     cws_tls_tx **emulation, char *why, size_t cap);
/* The emulation: appends plaintext of a content type (23 data, 21 alert) as records. 0, or -1. */
int cws_tls_tx_seal(cws_tls_tx *tx, cws_buffer *out, uint8_t type, const uint8_t *data, size_t len);
/* The kernel: sends close_notify (the record type in a control message). 0, or -1. */
int cws_tls_tx_kernel_close_notify(int fd);
void cws_tls_tx_free(cws_tls_tx *tx);

/* ---- timer wheel (engine_timer.c) --------------------------------------- */
void cws_timer_set(cws_loop *l, cws_conn *c, uint32_t ms);
void cws_timer_clear(cws_loop *l, cws_conn *c);
/* Runs every bucket up to the current time, calling fire for due conns. */
void cws_timer_advance(cws_loop *l, void (*fire)(cws_loop *, cws_conn *));
uint64_t cws_monotonic_ms(void);

#endif
