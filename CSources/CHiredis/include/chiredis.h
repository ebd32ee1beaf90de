// A tiny shim over hiredis (Debian: libhiredis-dev) for the service's Redis
// backplane. It hides redisReply, whose layout differs between hiredis 0.14
// (Debian 12) and 1.x, behind plain structs Swift can read; every exported
// symbol is prefixed chr_ so nothing clashes with the C core (cws_).
#ifndef CHIREDIS_H
#define CHIREDIS_H

#include <stddef.h>

typedef struct chr_conn chr_conn;

/// Connects (blocking, bounded by timeout_ms, which also bounds every later
/// read and write), then AUTHs when password is non-NULL. NULL on failure,
/// with the reason in err.
chr_conn *chr_connect(const char *host, int port, int timeout_ms, const char *password, char *err, size_t errlen);
void chr_free(chr_conn *c);
/// The socket, for poll().
int chr_fd(const chr_conn *c);
/// The last I/O or protocol error ("" when none).
const char *chr_error(const chr_conn *c);

/// Queues one command in the output buffer (nothing is sent yet). 0, or -1.
int chr_append(chr_conn *c, int argc, const char **argv, const size_t *lens);
/// Sends the output buffer, blocking. 0, or -1.
int chr_flush(chr_conn *c);
/// Flushes, then reads one reply, blocking: 0 a normal reply, 1 an error
/// reply from the server (text in chr_error), -1 an I/O error.
int chr_reply(chr_conn *c);

/// The last reply's elements when it is an array (else 0), and element i
/// when it is a string (else NULL); valid until the next call on c.
size_t chr_reply_count(const chr_conn *c);
/// The last reply as an integer: 1 and *out when it is one, else 0.
int chr_reply_integer(const chr_conn *c, long long *out);
const char *chr_reply_string(const chr_conn *c, size_t i, size_t *len);

/// What a subscribed connection receives (the sharded forms, "smessage",
/// "ssubscribe" and "sunsubscribe", map to the same kinds).
enum chr_push_kind {
    CHR_PUSH_OTHER = 0,
    CHR_PUSH_MESSAGE = 1,      // ["message", subject, payload]
    CHR_PUSH_SUBSCRIBE = 2,    // ["subscribe", subject, count]
    CHR_PUSH_UNSUBSCRIBE = 3,  // ["unsubscribe", subject, count]
    CHR_PUSH_ERROR = 4,        // an error reply: its text in payload (e.g. "MOVED 3999 127.0.0.1:7001")
};

typedef struct chr_push {
    int kind;
    const char *subject;
    size_t subject_len;
    const char *payload;
    size_t payload_len;
    long long count;
} chr_push;

/// Reads what the socket holds into the reader (call it when poll() says
/// readable, so it does not block). 0, or -1 (closed or I/O error).
int chr_fill(chr_conn *c);
/// The next whole reply already read: 1 (out is valid until the next call
/// or chr_free), 0 none buffered, -1 protocol error.
int chr_next_push(chr_conn *c, chr_push *out);

/// The Redis Cluster hash slot (0-16383) of a key or shard channel: CRC16
/// (XMODEM) of the key, or of its {hash tag} when it has a non-empty one.
unsigned chr_key_slot(const char *key, size_t len);

/// One range of the last reply when it answered CLUSTER SLOTS: slots
/// start...end served by the master at host:port (host "" when Redis did not
/// say, meaning the node that answered).
typedef struct chr_slot_range {
    int start;
    int end;
    const char *host;
    size_t host_len;
    int port;
} chr_slot_range;

/// Fills out with up to max ranges; returns how many the reply has.
size_t chr_reply_slot_ranges(const chr_conn *c, chr_slot_range *out, size_t max);

/// An eventfd that wakes a poll() on another thread (Swift's Glibc module
/// does not export eventfd). -1 on failure.
int chr_waker_new(void);
void chr_waker_wake(int fd);
void chr_waker_drain(int fd);

#endif
