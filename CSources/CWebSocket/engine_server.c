/*
 * Server lifecycle: configuration, listeners (one SO_REUSEPORT socket per
 * loop), backend choice, loop threads, graceful stop, statistics.
 */
#include "engine_internal.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

void cws_server_config_init(cws_server_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->backend = CWS_BACKEND_AUTO;
    cfg->overflow_policy = CWS_OVERFLOW_CLOSE;
    cfg->max_head_size = 8 * 1024;
    cfg->handshake_timeout_ms = 10000;
    /* 1 MiB, as Python's websockets: enough for any chat or API message, and
     * what one message may cost a loop (inflating included) stays small. */
    cfg->max_message_size = 1u << 20;
    cfg->idle_timeout_ms = 30000;
    cfg->pong_timeout_ms = 10000;
    cfg->close_timeout_ms = 3000;
    cfg->max_send_queue = 16u << 20;
    cfg->max_pings_per_second = 100;
    cfg->max_inbox_bytes = 64u << 20;
    cfg->send_low_water = 512u << 10;
    cws_deflate_config_init(&cfg->deflate);
}

/* Descriptors beyond the WebSocket connections: listeners, rings, handshakes in
 * progress, and whatever else the application keeps open. */
static uint32_t cws_default_max_connections(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= UINT32_MAX)
        return UINT32_MAX;
    uint64_t lim = rl.rlim_cur, headroom = lim / 16 > 64 ? lim / 16 : 64;
    return lim > headroom ? (uint32_t)(lim - headroom) : 1;
}

static void cws_err(char *err, size_t cap, const char *fmt, ...) {
    if (!err || !cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

/* The wheel's tick: a quarter of the shortest timeout, within [10, 250] ms. */
static uint32_t cws_pick_tick(const cws_server_config *c) {
    uint32_t t[] = {c->handshake_timeout_ms, c->idle_timeout_ms, c->pong_timeout_ms, c->close_timeout_ms};
    uint32_t m = 1000;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (t[i] && t[i] < m) m = t[i];
    m /= 4;
    return m < 10 ? 10 : m > 250 ? 250 : m;
}

/* Host byte order. */
static uint16_t cws_sockaddr_port(const struct sockaddr_storage *a) {
    return ntohs(a->ss_family == AF_INET ? ((const struct sockaddr_in *)a)->sin_port
                                         : ((const struct sockaddr_in6 *)a)->sin6_port);
}

static void cws_sockaddr_set_port(struct sockaddr_storage *a, uint16_t port) {
    if (a->ss_family == AF_INET) ((struct sockaddr_in *)a)->sin_port = htons(port);
    else ((struct sockaddr_in6 *)a)->sin6_port = htons(port);
}

static int cws_listen_one(const struct sockaddr *addr, socklen_t len, int dual, char *err, size_t cap) {
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        cws_err(err, cap, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* One listener per loop on the same port: the kernel spreads connections
     * across them, so loops never share an accept queue or a lock. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
        cws_err(err, cap, "SO_REUSEPORT: %s", strerror(errno));
        close(fd);
        return -1;
    }
    if (addr->sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, dual ? &zero : &one, sizeof one);
    if (bind(fd, addr, len) < 0 || listen(fd, 1024) < 0) {
        cws_err(err, cap, "bind/listen: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/*
 * SO_REUSEPORT lets any socket of the same user join the port's group: a
 * stale old process or a second server in this one would silently take a
 * share of the connections. A socket without SO_REUSEPORT cannot bind where
 * such a group listens, so one such bind (closed again at once) tells whether
 * the port is free. (Between that close and our own binds another process
 * could still slip in; that race is a few microseconds wide.)
 */
int cws_list_has(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *d = list; d && *d;) {
        const char *end = strchr(d, ',');
        size_t len = end ? (size_t)(end - d) : strlen(d);
        if (len == n && !memcmp(d, name, n)) return 1;
        d = end ? end + 1 : NULL;
    }
    return 0;
}

/* Is "what:index" among the faults to inject (cws_server_config.fault_inject)? */
static int cws_fault_injected(const char *faults, const char *what, uint32_t index) {
    char want[32];
    snprintf(want, sizeof want, "%s:%u", what, index);
    return cws_list_has(faults, want);
}

static int cws_port_taken(const struct sockaddr *addr, socklen_t len, int dual) {
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0; /* the real bind will say what is wrong */
    int one = 1, zero = 0;
    /* SO_REUSEADDR: connections of an earlier run in TIME_WAIT do not count. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (addr->sa_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, dual ? &zero : &one, sizeof one);
    int taken = bind(fd, addr, len) < 0 && errno == EADDRINUSE;
    close(fd);
    return taken;
}

static const cws_backend_ops *cws_choose_backend(const cws_server_config *cfg, char *err, size_t cap) {
    int want = cfg->backend;
    const char *env = getenv("CWS_BACKEND");
    if (want == CWS_BACKEND_AUTO && env && *env) {
        if (!strcasecmp(env, "uring") || !strcasecmp(env, "io_uring")) want = CWS_BACKEND_URING;
        else if (!strcasecmp(env, "epoll")) want = CWS_BACKEND_EPOLL;
    }
    char why[160] = "";
    if (want == CWS_BACKEND_EPOLL) return &cws_epoll_ops;
    int rc = cws_uring_probe(cfg->uring_disable, why, sizeof why);
    if (want == CWS_BACKEND_URING) {
        if (rc == 0) return &cws_uring_ops;
        cws_err(err, cap, "io_uring unavailable: %s", why);
        return NULL;
    }
    if (rc == 0) {
        fprintf(stderr, "cwebsocket: backend io_uring\n");
        return &cws_uring_ops;
    }
    fprintf(stderr, "cwebsocket: backend epoll (io_uring unavailable: %s)\n", why);
    return &cws_epoll_ops;
}

static void cws_loop_free(cws_server *s, cws_loop *l) {
    if (l->be) s->ops->loop_fini(l);
    for (unsigned i = 0; i < CWS_MAX_LISTENERS; i++)
        if (l->listen_fd[i] >= 0) close(l->listen_fd[i]);
    if (l->wake_fd >= 0) close(l->wake_fd);
    for (uint32_t i = 0; i < l->ninbox; i++) cws_msg_release(l->inbox[i].msg);
    free(l->inbox);
    free(l->inbox_spare);
    free(l->dirty);
    free(l->free_slots);
    for (uint32_t i = 0; i < CWS_MAX_CHUNKS; i++) free(atomic_load(&l->chunks[i]));
    cws_msg_pool_free(&l->pool);
    for (size_t i = 0; i < sizeof l->zdef / sizeof l->zdef[0]; i++) cws_deflater_free(l->zdef[i]);
    for (uint32_t i = 0; i < l->nzinf_idle; i++) cws_inflater_free(l->zinf_idle[i]);
    cws_buffer_free(&l->zbuf);
    cws_buffer_free(&l->tls_out);
    free(l->rbuf);
    pthread_mutex_destroy(&l->inbox_lock);
}

cws_server *cws_server_create(const cws_server_config *cfg_in, char *err, size_t err_cap) {
    cws_server_config cfg = *cfg_in;
    cws_server_config def;
    cws_server_config_init(&def);
    if (!cfg.max_head_size) cfg.max_head_size = def.max_head_size;
    if (!cfg.handshake_timeout_ms) cfg.handshake_timeout_ms = def.handshake_timeout_ms;
    if (!cfg.max_message_size) cfg.max_message_size = def.max_message_size;
    if (!cfg.pong_timeout_ms) cfg.pong_timeout_ms = def.pong_timeout_ms;
    if (!cfg.close_timeout_ms) cfg.close_timeout_ms = def.close_timeout_ms;
    if (!cfg.max_send_queue) cfg.max_send_queue = def.max_send_queue;
    if (!cfg.max_pings_per_second) cfg.max_pings_per_second = def.max_pings_per_second;
    if (!cfg.max_inbox_bytes) cfg.max_inbox_bytes = def.max_inbox_bytes;
    if (!cfg.send_low_water) cfg.send_low_water = def.send_low_water;
    if (!cfg.max_connections) cfg.max_connections = cws_default_max_connections();
    if (cfg.max_message_size > UINT32_MAX - 1) cfg.max_message_size = UINT32_MAX - 1;
    /* Compression settings: zero means the default, the rest is clamped to
     * what zlib and RFC 7692 allow. */
    cws_deflate_config *dc = &cfg.deflate;
    if (dc->level > 9) dc->level = 9;
    if (!dc->mem_level) dc->mem_level = def.deflate.mem_level;
    if (dc->mem_level > 9) dc->mem_level = 9;
    if (!dc->server_max_window_bits) dc->server_max_window_bits = def.deflate.server_max_window_bits;
    if (!dc->client_max_window_bits) dc->client_max_window_bits = def.deflate.client_max_window_bits;
    if (dc->server_max_window_bits < 8) dc->server_max_window_bits = 8;
    if (dc->server_max_window_bits > 15) dc->server_max_window_bits = 15;
    if (dc->client_max_window_bits < 8) dc->client_max_window_bits = 8;
    if (dc->client_max_window_bits > 15) dc->client_max_window_bits = 15;
    uint32_t nloops = cfg.loops;
    if (!nloops) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        nloops = n > 0 ? (uint32_t)n : 1;
    }
    if (nloops > 256) nloops = 256; /* the id has 8 bits for the loop */

    /* Writes to a peer that went away must fail with EPIPE, not kill us. */
    signal(SIGPIPE, SIG_IGN);

    const char *host = cfg.host ? cfg.host : "::";
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *ai = NULL;
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", cfg.port);
    int gai = getaddrinfo(host, portstr, &hints, &ai);
    if (gai || !ai) {
        cws_err(err, err_cap, "address %s: %s", host, gai_strerror(gai));
        return NULL;
    }

    const cws_backend_ops *ops = cws_choose_backend(&cfg, err, err_cap);
    if (!ops) {
        freeaddrinfo(ai);
        return NULL;
    }

    cws_server *s = calloc(1, sizeof *s);
    cws_loop *loops = s ? aligned_alloc(64, sizeof(cws_loop) * nloops) : NULL;
    if (!loops) {
        free(s);
        freeaddrinfo(ai);
        cws_err(err, err_cap, "out of memory");
        return NULL;
    }
    memset(loops, 0, sizeof(cws_loop) * nloops);
    atomic_init(&s->stop_deadline_ms, UINT64_MAX);
    pthread_mutex_init(&s->join_lock, NULL);
    s->cfg = cfg;
    /* Read while creating (below), not kept: the caller's strings need not outlive this call. */
    s->cfg.fault_inject = s->cfg.uring_disable = NULL;
    s->cfg.tls = NULL;
    if (cws_tls_server_init(s, cfg.tls, err, err_cap) < 0) {
        cws_tls_server_free(s);
        pthread_mutex_destroy(&s->join_lock);
        free(loops);
        free(s);
        freeaddrinfo(ai);
        return NULL;
    }
    s->cfg.host = NULL;
    s->ops = ops;
    s->loops = loops;
    s->tick_ms = cws_pick_tick(&cfg);
    /* "::" (or no host) is every address, IPv4 included: IPV6_V6ONLY off, so
     * 127.0.0.1 and ::1 both reach it. Other IPv6 addresses are IPv6 only. */
    int dual = ai->ai_family == AF_INET6 &&
               IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr);

    /* One address per listener: the host, with each listener's port. */
    struct sockaddr_storage addr[CWS_MAX_LISTENERS];
    socklen_t alen = (socklen_t)ai->ai_addrlen;
    memcpy(&addr[CWS_LISTENER_MAIN], ai->ai_addr, alen);
    freeaddrinfo(ai);
    uint16_t want_port[CWS_MAX_LISTENERS] = {cfg.port, cfg.tls_port};
    s->nlisteners = cfg.tls && cfg.tls_beside_plain ? 2 : 1;
    s->listener_tls[CWS_LISTENER_MAIN] = cfg.tls && !cfg.tls_beside_plain;
    s->listener_tls[CWS_LISTENER_TLS] = s->nlisteners == 2;
    for (unsigned k = 0; k < s->nlisteners; k++) {
        addr[k] = addr[CWS_LISTENER_MAIN];
        cws_sockaddr_set_port(&addr[k], want_port[k]);
        if (k && want_port[k] && want_port[k] == want_port[0]) {
            cws_err(err, err_cap, "the TLS port %u is the plain port too", want_port[k]);
            goto fail_early;
        }
        if (want_port[k] && !cfg.share_port && cws_port_taken((struct sockaddr *)&addr[k], alen, dual)) {
            cws_err(err, err_cap, "%s port %u is already in use by another server (set share_port to share it)",
                    host, want_port[k]);
            goto fail_early;
        }
    }

    uint64_t start = cws_monotonic_ms();
    for (uint32_t i = 0; i < nloops; i++) {
        cws_loop *l = &loops[i];
        l->srv = s;
        l->index = i;
        for (unsigned k = 0; k < CWS_MAX_LISTENERS; k++) l->listen_fd[k] = -1;
        l->wake_fd = -1;
        l->start_ms = start;
        pthread_mutex_init(&l->inbox_lock, NULL);
        s->nloops = i + 1;
        for (unsigned k = 0; k < s->nlisteners; k++) {
            l->listen_fd[k] = cws_listen_one((struct sockaddr *)&addr[k], alen, dual, err, err_cap);
            if (l->listen_fd[k] < 0) goto fail;
            if (i == 0) {
                /* Port 0: the other loops' listeners join the port the first one got. */
                struct sockaddr_storage got;
                socklen_t gl = sizeof got;
                getsockname(l->listen_fd[k], (struct sockaddr *)&got, &gl);
                uint16_t port = cws_sockaddr_port(&got);
                cws_sockaddr_set_port(&addr[k], port);
                if (k == CWS_LISTENER_MAIN) s->port = port;
                if (s->listener_tls[k]) s->tls_port = port;
            }
        }
        l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (l->wake_fd < 0) {
            cws_err(err, err_cap, "eventfd: %s", strerror(errno));
            goto fail;
        }
        if (ops->loop_init(l, err, err_cap) < 0) goto fail;
        l->fault_wait = (uint8_t)cws_fault_injected(cfg.fault_inject, "wait", i);
        l->fault_start = (uint8_t)cws_fault_injected(cfg.fault_inject, "start", i);
    }
    return s;
fail:
    for (uint32_t i = 0; i < s->nloops; i++) cws_loop_free(s, &loops[i]);
fail_early:
    cws_tls_server_free(s);
    pthread_mutex_destroy(&s->join_lock);
    free(loops);
    free(s);
    return NULL;
}

/* Is this thread one of s's loops (inside a callback)? */
static int cws_on_own_loop(const cws_server *s) { return cws_current_loop && cws_current_loop->srv == s; }

int cws_server_is_loop_thread(const cws_server *s) { return s && cws_on_own_loop(s); }

int cws_server_current_loop(const cws_server *s) { return s && cws_on_own_loop(s) ? (int)cws_current_loop->index : -1; }

uint32_t cws_server_loop_count(const cws_server *s) { return s ? s->nloops : 0; }

void cws_server_turn_again(cws_server *s) {
    if (s && cws_on_own_loop(s)) cws_current_loop->turn_again = 1;
}

uint32_t cws_conn_id_loop(cws_conn_id id) { return cws_id_loop(id); }

int cws_server_wake_loop(cws_server *s, uint32_t loop) {
    if (!s || loop >= s->nloops) return -ENOENT;
    cws_loop *l = &s->loops[loop];
    /* dead under the inbox lock, as the loop marks it. A wake that gets 0
     * may still find the loop ending before it turns again: a caller that
     * must not lose work hands it on once the loops are joined. */
    pthread_mutex_lock(&l->inbox_lock);
    int rc = atomic_load_explicit(&l->run_state, memory_order_acquire) == 1 && !l->dead ? 0 : -EPIPE;
    pthread_mutex_unlock(&l->inbox_lock);
    if (rc == 0) cws_loop_wake(l);
    return rc;
}

static void cws_server_begin_stop(cws_server *s, uint32_t timeout_ms) {
    if (atomic_exchange_explicit(&s->stopping, 1, memory_order_acq_rel)) return;
    /* A loop may see `stopping` before this store: it then reads "no
     * deadline yet" (UINT64_MAX), not 0, and waits instead of force-closing. */
    atomic_store_explicit(&s->stop_deadline_ms, cws_monotonic_ms() + timeout_ms, memory_order_release);
    /* Every loop (each has its eventfd from the create): `started` is the
     * starting thread's, and a stop from a callback on loop 0 can come while
     * loop 1 is still being created. Each loop also looks at `stopping` in
     * every turn, so one that starts after this still stops. */
    for (uint32_t i = 0; i < s->nloops; i++) cws_loop_wake(&s->loops[i]);
}

static void cws_server_join(cws_server *s) {
    pthread_mutex_lock(&s->join_lock);
    for (int i = 0; i < s->started; i++) {
        if (!s->loops[i].joined) pthread_join(s->loops[i].thread, NULL);
        s->loops[i].joined = 1;
    }
    pthread_mutex_unlock(&s->join_lock);
}

int cws_server_start(cws_server *s) {
    if (!s) return -EINVAL;
    /* Under join_lock: a loop serves as soon as it is created, and a stop
     * from one of its callbacks (handed to another thread) joins the loops
     * `started` counts; unlocked, it could read the count before it was
     * written and leave a loop running (TSan saw the race, 2 runs in 16 of
     * aStopFromAHandlerEndsRun). */
    pthread_mutex_lock(&s->join_lock);
    if (s->started) {
        pthread_mutex_unlock(&s->join_lock);
        return -EINVAL;
    }
    int rc = 0;
    for (uint32_t i = 0; i < s->nloops && rc == 0; i++) {
        int e = pthread_create(&s->loops[i].thread, NULL, cws_loop_thread, &s->loops[i]);
        if (e) rc = -e;
        else s->started = (int)i + 1;
    }
    pthread_mutex_unlock(&s->join_lock);
    /* Success means every loop serves: a loop that failed would otherwise
     * leave its SO_REUSEPORT listener bound, and a share of new connections
     * would wait in a backlog nobody reads. */
    for (int i = 0; i < s->started; i++) {
        int st;
        while ((st = atomic_load_explicit(&s->loops[i].run_state, memory_order_acquire)) == 0) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        if (st < 0 && rc == 0) rc = st;
    }
    if (rc < 0) {
        cws_server_begin_stop(s, 0);
        cws_server_join(s);
    }
    return rc;
}

int cws_server_stop(cws_server *s, uint32_t timeout_ms) {
    if (!s) return -EINVAL;
    cws_server_begin_stop(s, timeout_ms);
    /* A loop cannot join itself: begin, and let another thread wait. */
    if (cws_on_own_loop(s)) return -EDEADLK;
    cws_server_join(s);
    return 0;
}

void cws_server_destroy(cws_server *s) {
    if (!s) return;
    if (cws_on_own_loop(s)) {
        fprintf(stderr, "cwebsocket: cws_server_destroy called from a callback, on one of the server's own loop "
                        "threads: it would join itself and free the loop it runs on\n");
        abort();
    }
    cws_server_stop(s, 0);
    for (uint32_t i = 0; i < s->nloops; i++) cws_loop_free(s, &s->loops[i]);
    pthread_mutex_destroy(&s->join_lock);
    cws_tls_server_free(s);
    free(s->loops);
    free(s);
}

uint16_t cws_server_port(const cws_server *s) { return s ? s->port : 0; }

uint16_t cws_server_tls_port(const cws_server *s) { return s ? s->tls_port : 0; }

const char *cws_server_backend_name(const cws_server *s) { return s ? s->ops->name : ""; }

void cws_server_get_stats(const cws_server *s, cws_server_stats *out) {
    memset(out, 0, sizeof *out);
    if (!s) return;
    for (uint32_t i = 0; i < s->nloops; i++) {
        const cws_loop_stats *st = &s->loops[i].stats;
        out->connections += atomic_load_explicit(&st->connections, memory_order_relaxed);
        out->accepted += atomic_load_explicit(&st->accepted, memory_order_relaxed);
        out->messages_in += atomic_load_explicit(&st->messages_in, memory_order_relaxed);
        out->bytes_in += atomic_load_explicit(&st->bytes_in, memory_order_relaxed);
        out->messages_out += atomic_load_explicit(&st->messages_out, memory_order_relaxed);
        out->bytes_out += atomic_load_explicit(&st->bytes_out, memory_order_relaxed);
        out->dropped += atomic_load_explicit(&st->dropped, memory_order_relaxed);
        out->sockets += atomic_load_explicit(&st->sockets, memory_order_relaxed);
        out->accept_errors += atomic_load_explicit(&st->accept_errors, memory_order_relaxed);
        out->accept_pauses += atomic_load_explicit(&st->accept_pauses, memory_order_relaxed);
        out->refused_full += atomic_load_explicit(&st->refused_full, memory_order_relaxed);
        out->loops_failed += atomic_load_explicit(&st->failed, memory_order_relaxed);
        out->inflate_refused += atomic_load_explicit(&st->inflate_refused, memory_order_relaxed);
        out->pings_refused += atomic_load_explicit(&st->pings_refused, memory_order_relaxed);
        out->input_deferred += atomic_load_explicit(&st->input_deferred, memory_order_relaxed);
        out->inbox_refused += atomic_load_explicit(&st->inbox_refused, memory_order_relaxed);
        out->handshakes_failed += atomic_load_explicit(&st->handshakes_failed, memory_order_relaxed);
        out->upgrades_deferred += atomic_load_explicit(&st->deferred, memory_order_relaxed);
        out->receive_buffers_held += atomic_load_explicit(&st->receive_buffers_held, memory_order_relaxed);
        out->input_held_bytes += atomic_load_explicit(&st->input_held_bytes, memory_order_relaxed);
        out->tls_handshakes += atomic_load_explicit(&st->tls_handshakes, memory_order_relaxed);
        out->tls_handshakes_failed += atomic_load_explicit(&st->tls_handshakes_failed, memory_order_relaxed);
        out->tls_kernel_offloads += atomic_load_explicit(&st->tls_kernel_offloads, memory_order_relaxed);
        out->socket_writes += atomic_load_explicit(&st->socket_writes, memory_order_relaxed);
        out->in_place_sends += atomic_load_explicit(&st->in_place_sends, memory_order_relaxed);
        out->send_contexts += atomic_load_explicit(&st->send_contexts, memory_order_relaxed);
        out->send_rings += atomic_load_explicit(&st->send_rings, memory_order_relaxed);
        out->send_contexts_made += atomic_load_explicit(&st->send_contexts_made, memory_order_relaxed);
        out->send_gather_bytes += atomic_load_explicit(&st->send_gather_bytes, memory_order_relaxed);
        out->send_gather_bytes_peak += atomic_load_explicit(&st->send_gather_bytes_peak, memory_order_relaxed);
    }
}
