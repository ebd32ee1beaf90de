/*
 * A test-only echo server on the C engine, run as a child process so a test
 * can give it limits the test process must not have (RLIMIT_NOFILE), watch
 * its CPU in /proc, and kill it. Usage:
 *   EngineTestHost epoll|uring NOFILE [destroy-in-callback]
 * Prints "port N" on stdout once listening; GET /stats answers with the
 * engine's counters as "name=value" lines. Runs until SIGTERM.
 * destroy-in-callback: the first message makes the callback call
 * cws_server_destroy (which must abort with a message, not deadlock).
 * With CWS_TEST_TLS_CERT and CWS_TEST_TLS_KEY set (PEM files) the listener
 * is TLS.
 */
#include <cwebsocket.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static cws_server *server;
static int destroy_in_callback;

static void on_request(void *ctx, cws_request *req, const cws_http_request *http, const cws_upgrade_info *up) {
    (void)ctx;
    if (up) {
        cws_request_accept(req, NULL, NULL);
        return;
    }
    if (http->path.len == 6 && !memcmp(http->path.ptr, "/stats", 6)) {
        cws_server_stats st;
        cws_server_get_stats(server, &st);
        char body[512];
        int n = snprintf(body, sizeof body,
                         "accepted=%llu\naccept_errors=%llu\naccept_pauses=%llu\nsockets=%llu\nconnections=%llu\n",
                         (unsigned long long)st.accepted, (unsigned long long)st.accept_errors,
                         (unsigned long long)st.accept_pauses, (unsigned long long)st.sockets,
                         (unsigned long long)st.connections);
        cws_request_respond(req, 200, "text/plain", NULL, body, (size_t)n);
    }
}

static void on_message(void *ctx, cws_conn_id id, void *user, uint8_t opcode, const void *data, size_t len) {
    (void)ctx;
    (void)user;
    if (destroy_in_callback) cws_server_destroy(server);
    cws_send(server, id, opcode, data, len);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s epoll|uring NOFILE [destroy-in-callback]\n", argv[0]);
        return 2;
    }
    destroy_in_callback = argc > 3 && strcmp(argv[3], "destroy-in-callback") == 0;
    /* The abort under test is the expected end: no crash reporter (the Swift
     * runtime's backtracer would start and hold our output open). */
    signal(SIGABRT, SIG_DFL);
    struct rlimit rl = {.rlim_cur = (rlim_t)atol(argv[2]), .rlim_max = (rlim_t)atol(argv[2])};
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        perror("setrlimit");
        return 1;
    }
    /* SIGTERM is taken with sigwait, on this thread only. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    cws_server_config cfg;
    cws_server_config_init(&cfg);
    cfg.host = "127.0.0.1";
    cfg.loops = 1;
    cfg.backend = strcmp(argv[1], "uring") == 0 ? CWS_BACKEND_URING : CWS_BACKEND_EPOLL;
    cfg.max_connections = 100000; /* the descriptor limit itself is under test */
    cfg.callbacks.on_request = on_request;
    cfg.callbacks.on_message = on_message;
    cws_tls_identity identity = {.certificate_chain_file = getenv("CWS_TEST_TLS_CERT"),
                                 .private_key_file = getenv("CWS_TEST_TLS_KEY")};
    cws_tls_config tls = {.identities = &identity, .identity_count = 1};
    if (identity.certificate_chain_file && identity.private_key_file) cfg.tls = &tls;
    char err[256];
    server = cws_server_create(&cfg, err, sizeof err);
    if (!server) {
        fprintf(stderr, "cws_server_create: %s\n", err);
        return 1;
    }
    if (cws_server_start(server) != 0) return 1;
    printf("port %u\n", cws_server_port(server));
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    cws_server_stop(server, 500);
    cws_server_destroy(server);
    return 0;
}
