/*
 * cwebsocket.h - the one public header of the C core.
 *
 * Everything here is sans-IO: functions take bytes and return results or a
 * close code; none of them touches a socket. Every exported symbol starts
 * with cws_. Buffers are void* / uint8_t* and structs are plain, so Swift
 * imports them directly.
 */
#ifndef CWEBSOCKET_H
#define CWEBSOCKET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * SIMD levels and run-time dispatch (cpu.c)
 *
 * Each kernel family (masking, UTF-8) has one implementation per level. The
 * best level the CPU supports is picked once; the environment variable
 * CWS_SIMD=scalar|sse|avx2|avx512 caps it (for tests and benchmarks).
 * A family without a kernel at some level uses the next lower one.
 * ------------------------------------------------------------------------ */
typedef enum cws_simd_level {
    CWS_SIMD_SCALAR = 0, /* portable C, 64-bit words where it helps */
    CWS_SIMD_SSE = 1,    /* SSE2 (masking), SSSE3 (UTF-8: needs pshufb) */
    CWS_SIMD_AVX2 = 2,
    CWS_SIMD_AVX512 = 3, /* AVX-512 F+BW */
} cws_simd_level;

/* 1 if this CPU can run kernels of that level. */
int cws_simd_supported(int level);
/* The level the dispatching entry points use (CPU best, capped by CWS_SIMD). */
int cws_simd_active(void);
/* "scalar", "sse", "avx2", "avx512". */
const char *cws_simd_name(int level);

/* ------------------------------------------------------------------------
 * Masking (mask.c), RFC 6455 section 5.3
 *
 * key: the four masking-key bytes exactly as they appear on the wire, loaded
 *      into a uint32_t with memcpy (so byte 0 of the key is the first byte
 *      in memory).
 * offset: the position of buf[0] within the frame payload; lets a payload
 *      that arrives in pieces be unmasked piece by piece.
 * Masking is its own inverse, so this both masks and unmasks, in place.
 * ------------------------------------------------------------------------ */
void cws_mask(void *buf, size_t len, uint32_t key, size_t offset);
/* The same at a given SIMD level (falls back if the CPU lacks it). */
void cws_mask_with(int level, void *buf, size_t len, uint32_t key, size_t offset);
/* dst = src masked; dst and src may be equal but must not otherwise overlap. */
void cws_mask_copy(void *dst, const void *src, size_t len, uint32_t key, size_t offset);

/* ------------------------------------------------------------------------
 * UTF-8 validation (utf8.c), incremental and fail-fast
 *
 * cws_utf8_feed validates the next chunk of one message. It fails as soon as
 * a byte arrives that can never be part of valid UTF-8, even when that byte
 * ends the chunk in the middle of a character (F4 90 fails at the 90, since
 * no continuation can make it valid). The state is a DFA state: zero at a
 * character boundary, so a message that arrives whole carries nothing.
 * ------------------------------------------------------------------------ */
typedef struct cws_utf8_state {
    uint32_t state; /* 0: at a character boundary; otherwise the DFA state */
} cws_utf8_state;

#define CWS_UTF8_VALID 0
#define CWS_UTF8_INVALID (-1)

void cws_utf8_init(cws_utf8_state *s);
/* 0 if every byte so far can still be part of valid UTF-8; -1 otherwise,
 * with *bad_offset (if not NULL) set to the index within this chunk of the
 * first byte that made the text invalid. After -1 the state is poisoned:
 * further feeds return -1 with *bad_offset = 0. */
int cws_utf8_feed(cws_utf8_state *s, const void *buf, size_t len, size_t *bad_offset);
int cws_utf8_feed_with(int level, cws_utf8_state *s, const void *buf, size_t len, size_t *bad_offset);
/* At the end of the message: 0 if it ended on a character boundary, else -1. */
int cws_utf8_finish(const cws_utf8_state *s);
/* Whole buffer: 0 if valid UTF-8, else -1 with *bad_offset set as above
 * (a truncated final character is reported at len). */
int cws_utf8_validate(const void *buf, size_t len, size_t *bad_offset);
int cws_utf8_validate_with(int level, const void *buf, size_t len, size_t *bad_offset);

/* ------------------------------------------------------------------------
 * Framing (frame.c), RFC 6455 section 5
 * ------------------------------------------------------------------------ */
typedef enum cws_opcode {
    CWS_OP_CONTINUATION = 0x0,
    CWS_OP_TEXT = 0x1,
    CWS_OP_BINARY = 0x2,
    CWS_OP_CLOSE = 0x8,
    CWS_OP_PING = 0x9,
    CWS_OP_PONG = 0xA,
} cws_opcode;

/* Close codes used by the core (RFC 6455 section 7.4.1). */
enum {
    CWS_CLOSE_NORMAL = 1000,
    CWS_CLOSE_GOING_AWAY = 1001,
    CWS_CLOSE_PROTOCOL_ERROR = 1002,
    CWS_CLOSE_UNSUPPORTED_DATA = 1003,
    CWS_CLOSE_NO_STATUS = 1005,   /* never on the wire */
    CWS_CLOSE_ABNORMAL = 1006,    /* never on the wire */
    CWS_CLOSE_INVALID_PAYLOAD = 1007,
    CWS_CLOSE_POLICY_VIOLATION = 1008,
    CWS_CLOSE_MESSAGE_TOO_BIG = 1009,
    CWS_CLOSE_MANDATORY_EXTENSION = 1010,
    CWS_CLOSE_INTERNAL_ERROR = 1011,
    CWS_CLOSE_TRY_AGAIN_LATER = 1013,
};

#define CWS_RSV1 0x4
#define CWS_RSV2 0x2
#define CWS_RSV3 0x1

/* Largest frame header: 2 + 8 (64-bit length) + 4 (mask key). */
#define CWS_MAX_HEADER_SIZE 14

typedef struct cws_frame_header {
    uint64_t payload_len;
    uint32_t mask_key;   /* wire order, as for cws_mask; 0 when unmasked */
    uint8_t fin;         /* 0 or 1 */
    uint8_t rsv;         /* CWS_RSV1|CWS_RSV2|CWS_RSV3 bits */
    uint8_t opcode;      /* cws_opcode */
    uint8_t masked;      /* 0 or 1 */
    uint8_t header_len;  /* 2..14 */
} cws_frame_header;

typedef enum cws_role {
    CWS_ROLE_SERVER = 0, /* reads client frames: they must be masked */
    CWS_ROLE_CLIENT = 1, /* reads server frames: they must not be masked */
} cws_role;

/*
 * A streaming frame parser. It keeps the partial header (so bytes can come
 * one at a time) and the message-level state that the continuation rules
 * need. Payload bytes are unmasked in place and handed back as they arrive.
 */
typedef struct cws_parser {
    /* configuration: set by cws_parser_init, may be changed between frames */
    uint64_t max_frame_payload; /* larger frames fail with 1009; 0 = no limit */
    uint8_t role;               /* cws_role */
    uint8_t rsv_allowed;        /* RSV bits an extension claims (e.g. CWS_RSV1 for
                                   permessage-deflate); only legal on the first
                                   frame of a data message */
    /* state: private */
    uint8_t header_have;
    uint8_t in_payload;
    uint8_t in_message;      /* a fragmented data message is in progress */
    uint8_t message_opcode;  /* TEXT or BINARY of that message */
    uint16_t failed_code;    /* close code of the error that stopped the parser */
    uint8_t header_buf[CWS_MAX_HEADER_SIZE];
    cws_frame_header frame;
    uint64_t payload_done;
} cws_parser;

typedef struct cws_frame_event {
    cws_frame_header header; /* the frame these bytes belong to */
    uint8_t *payload;        /* unmasked payload bytes (points into the input) */
    size_t payload_len;      /* may be 0 */
    uint64_t payload_offset; /* offset of payload[0] within the frame payload */
    uint8_t frame_start;     /* first event of this frame */
    uint8_t frame_end;       /* last event of this frame: the payload is complete */
    uint8_t message_opcode;  /* TEXT/BINARY for data frames (continuations too),
                                else the control opcode */
    uint8_t message_start;   /* frame_start of the first frame of a data message */
} cws_frame_event;

#define CWS_PARSE_NEED_MORE 0 /* every input byte consumed, no event */
#define CWS_PARSE_EVENT 1     /* *ev is filled in */

void cws_parser_init(cws_parser *p, cws_role role, uint64_t max_frame_payload);
/*
 * Consumes bytes from buf (which it may unmask in place), stores the count in
 * *consumed, and returns CWS_PARSE_EVENT with *ev filled in, CWS_PARSE_NEED_MORE,
 * or a negative close code (-1002, -1009) when the input breaks the protocol.
 * Call again with the rest of the buffer after an event. A frame whose whole
 * payload is in the buffer comes back as a single event (start and end).
 * After an error the parser stays failed.
 *
 * *consumed after an error: every error is found at a frame header, and the
 * call that reports it consumes the header's bytes up to its end (those of
 * this call only, when the header arrived in pieces), so the bytes consumed
 * over the whole stream end right after the bad header however the input was
 * split. Calls on a failed parser consume nothing and return the same error.
 */
int cws_parse(cws_parser *p, void *buf, size_t len, size_t *consumed, cws_frame_event *ev);

/*
 * Parses a complete header from buf without any state or rule checks beyond
 * the wire format (64-bit length top bit): returns the header length, 0 if
 * more bytes are needed, or -1002.
 */
int cws_frame_header_decode(const void *buf, size_t len, cws_frame_header *out);

/*
 * Writes a frame header into out (at least CWS_MAX_HEADER_SIZE bytes) and
 * returns its length. mask_key is used only when masked is 1 (the client role).
 */
size_t cws_frame_header_encode(void *out, uint8_t fin, uint8_t rsv, uint8_t opcode,
                               uint64_t payload_len, uint8_t masked, uint32_t mask_key);
/* Header length for a payload of this size. */
size_t cws_frame_header_size(uint64_t payload_len, uint8_t masked);
/*
 * Writes a whole frame (header + payload, masked if masked is 1) into out,
 * which has room for cws_frame_header_size(len, masked) + len bytes. Returns
 * the bytes written.
 */
size_t cws_frame_encode(void *out, uint8_t fin, uint8_t rsv, uint8_t opcode,
                        const void *payload, size_t len, uint8_t masked, uint32_t mask_key);

/* 1 if a close code may appear on the wire (1000-1003, 1007-1014, 3000-4999). */
int cws_close_code_valid(uint32_t code);
/*
 * Checks a received close payload. Returns 0 and sets *code (1005 when the
 * payload is empty) and the reason slice, or the close code to fail with:
 * 1002 for a 1-byte payload or a code that is not allowed, 1007 for a reason
 * that is not UTF-8.
 */
int cws_close_payload_parse(const void *payload, size_t len, uint16_t *code,
                            const uint8_t **reason, size_t *reason_len);
/* Writes code + reason (reason truncated to 123 bytes at a character boundary).
 * out needs 125 bytes. code 0 writes an empty payload. Returns the length. */
size_t cws_close_payload_encode(void *out, uint16_t code, const void *reason, size_t reason_len);

/* ------------------------------------------------------------------------
 * HTTP/1.1 upgrade handshake (handshake.c), RFC 6455 section 4
 * ------------------------------------------------------------------------ */
#define CWS_HTTP_MAX_HEADERS 64

typedef struct cws_slice {
    const char *ptr; /* into the request buffer; NULL when absent */
    size_t len;
} cws_slice;

typedef struct cws_http_header {
    cws_slice name;
    cws_slice value; /* surrounding whitespace trimmed */
} cws_http_header;

/* An incremental request-head parser: call cws_http_parse each time more bytes
 * have been appended to the same buffer; it resumes its scan where it stopped. */
typedef struct cws_http_request {
    /* state: private */
    size_t scanned;
    size_t max_head;
    /* result, valid once cws_http_parse returned > 0 */
    size_t head_len;             /* bytes up to and including the blank line */
    cws_slice method;
    cws_slice target;            /* request-target as sent */
    cws_slice path;              /* target before '?' (absolute-form: its path part) */
    cws_slice query;             /* after '?', without it; ptr NULL if none */
    uint8_t http_minor;          /* 1 for HTTP/1.1 */
    uint8_t http_major;
    uint16_t header_count;
    cws_http_header headers[CWS_HTTP_MAX_HEADERS];
} cws_http_request;

/* Errors from cws_http_parse, as negative HTTP status codes. */
#define CWS_HTTP_BAD_REQUEST (-400)
#define CWS_HTTP_HEAD_TOO_LARGE (-431)

void cws_http_request_init(cws_http_request *r, size_t max_head);
/*
 * buf holds all bytes received so far (the same buffer, grown). Returns the
 * head length when the head is complete, 0 when more bytes are needed, or a
 * negative HTTP status: -400 for a malformed head, -431 when no complete head
 * fits in max_head bytes or there are more than CWS_HTTP_MAX_HEADERS headers.
 */
long cws_http_parse(cws_http_request *r, const void *buf, size_t len);
/* First header with this name (case-insensitive), or a NULL slice. */
cws_slice cws_http_header_get(const cws_http_request *r, const char *name);

/* What a validated upgrade request offers. */
typedef struct cws_upgrade_info {
    cws_slice key;           /* Sec-WebSocket-Key, as sent */
    cws_slice origin;        /* Origin, NULL if absent */
    cws_slice protocols;     /* Sec-WebSocket-Protocol values (first header) */
    cws_slice extensions;    /* Sec-WebSocket-Extensions (first header; see count) */
    uint16_t extension_headers; /* how many Sec-WebSocket-Extensions headers */
    cws_slice cookie;        /* Cookie, NULL if absent */
    cws_slice host;
} cws_upgrade_info;

/*
 * 1 if the request asks for a WebSocket upgrade at all (an Upgrade header
 * naming websocket, or Sec-WebSocket-Key present): such requests are answered
 * by cws_upgrade_validate, others go to the HTTP router.
 */
int cws_http_is_upgrade(const cws_http_request *r);
/*
 * Validates a WebSocket opening handshake: GET, HTTP/1.1 or later, Host
 * present, a Connection token list containing "upgrade" (across repeated
 * headers, case-insensitive), Upgrade: websocket, exactly one
 * Sec-WebSocket-Key that base64-decodes to 16 bytes, Sec-WebSocket-Version 13.
 * Returns 0 and fills *info, or the HTTP status to answer with: 400 (bad
 * request), 405 (not GET), 426 (version missing or not 13: answer with
 * cws_http_error_response which adds Sec-WebSocket-Version: 13).
 */
int cws_upgrade_validate(const cws_http_request *r, cws_upgrade_info *info);

/* Sec-WebSocket-Accept for a key: base64(SHA-1(key + GUID)), 28 chars, no NUL. */
void cws_accept_key(const void *key, size_t key_len, char out[28]);

/*
 * Builds the 101 Switching Protocols response into out (cap bytes). protocol
 * and extensions may be NULL / empty (the headers are then left out). Returns
 * the length, or 0 if cap is too small.
 */
size_t cws_upgrade_response(void *out, size_t cap, const void *key, size_t key_len,
                            const char *protocol, const char *extensions);
/*
 * Builds a short error response ("HTTP/1.1 426 Upgrade Required", with
 * Sec-WebSocket-Version: 13 for 426, Connection: close, Content-Length) into
 * out. Returns the length, or 0 if cap is too small.
 */
size_t cws_http_error_response(void *out, size_t cap, int status);

/* Standard base64 (RFC 4648) used by the handshake. out needs 4*ceil(len/3). */
size_t cws_base64_encode(const void *in, size_t len, char *out);
/* Decodes padded standard base64; returns the decoded length, or -1 if malformed
 * or if the result would not fit in cap. */
long cws_base64_decode(const char *in, size_t len, void *out, size_t cap);
/* SHA-1 of a buffer (handshake only; not for anything that needs security). */
void cws_sha1(const void *data, size_t len, uint8_t out[20]);


/* ------------------------------------------------------------------------
 * permessage-deflate (deflate.c), RFC 7692
 *
 * Negotiation is a pure function of the request's Sec-WebSocket-Extensions
 * headers and the server's policy. The compressor and decompressor work on
 * whole message payloads (compressor) or payload pieces (decompressor); the
 * 00 00 FF FF tail of the sync flush is stripped / appended by them.
 * ------------------------------------------------------------------------ */
typedef struct cws_deflate_config {
    uint8_t enabled;                    /* 0 (default): never negotiate compression */
    uint8_t level;                      /* zlib level 0-9 (default 1: most of the ratio, little CPU) */
    uint8_t mem_level;                  /* zlib memLevel 1-9 (default 8); sets the compressor's hash
                                           and buffer sizes: 2^(mem_level+9) bytes */
    uint8_t server_max_window_bits;     /* 8-15 (default 15): largest window the server compresses
                                           with; 8 compresses runs only (zlib has no raw 8-bit window) */
    uint8_t client_max_window_bits;     /* 8-15 (default 15): largest window asked of clients that
                                           offer client_max_window_bits (bounds our inflate memory) */
    uint8_t server_no_context_takeover; /* 1 (default): always answer it; then one compressor per
                                           loop serves every connection and a message sent to many
                                           connections is compressed once */
    uint8_t client_no_context_takeover; /* 1: always answer it (no per-connection inflate state);
                                           default 0: answered only when the client offers it */
    uint32_t min_size;                  /* payloads shorter than this go out uncompressed (default 64) */
    uint16_t max_inflate_ratio;         /* if set, a compressed message may inflate to at most this
                                           many times its compressed size, plus 64 KiB (inflating stops
                                           there: 1009), so a bomb costs what it sent. 0 (default): no
                                           ratio; repetitive JSON legitimately reaches 1000:1, and
                                           max_message_size bounds each message's work */
} cws_deflate_config;

/* What was agreed for one connection. */
typedef struct cws_deflate_params {
    uint8_t server_no_context_takeover; /* the server resets its compressor per message */
    uint8_t client_no_context_takeover; /* the client resets its compressor per message */
    uint8_t server_max_window_bits;     /* 8-15: the window the server compresses with */
    uint8_t client_max_window_bits;     /* 8-15: the largest window the client compresses with */
} cws_deflate_params;

/* Enough for any response cws_deflate_negotiate writes. */
#define CWS_DEFLATE_RESPONSE_MAX 160

void cws_deflate_config_init(cws_deflate_config *cfg);
/*
 * Picks the first acceptable permessage-deflate offer from the values of the
 * Sec-WebSocket-Extensions headers (in order; each may list several offers).
 * Other extensions are ignored; an offer with an unknown, repeated or
 * malformed parameter is declined and the next one considered. Returns the
 * length of the response header value written to resp (NUL-terminated) with
 * *out filled in, 0 when no offer is acceptable (or cfg->enabled is 0), or -1
 * if cap is too small.
 */
int cws_deflate_negotiate(const cws_deflate_config *cfg, const cws_slice *values, size_t count,
                          cws_deflate_params *out, char *resp, size_t cap);
/* The same over every Sec-WebSocket-Extensions header of a parsed request. */
int cws_deflate_negotiate_request(const cws_deflate_config *cfg, const cws_http_request *r,
                                  cws_deflate_params *out, char *resp, size_t cap);

/* A growable byte buffer (malloc'd; free with cws_buffer_free). */
typedef struct cws_buffer {
    uint8_t *data;
    size_t len, cap;
} cws_buffer;
void cws_buffer_free(cws_buffer *b);

typedef struct cws_deflater cws_deflater;
typedef struct cws_inflater cws_inflater;

/* A compressor for one direction. window_bits 8-15 (8: see server_max_window_bits);
 * context_takeover 0 resets the context after every message. NULL on failure. */
cws_deflater *cws_deflater_new(int level, int mem_level, int window_bits, int context_takeover);
void cws_deflater_free(cws_deflater *d);
/* Compresses one message payload and appends it (tail stripped) to out.
 * 0, or -1011 (out of memory; the context is reset). */
int cws_deflater_message(cws_deflater *d, const void *in, size_t len, cws_buffer *out);
/* Bytes the compressor holds (zlib's allocations and the handle). */
size_t cws_deflater_memory(const cws_deflater *d);

/* A decompressor; window_bits must be at least the peer's compression window. */
cws_inflater *cws_inflater_new(int window_bits, int context_takeover);
void cws_inflater_free(cws_inflater *f);
/*
 * Inflates the next piece of a compressed message's payload, appending to out
 * (grown as output appears, never past max + 1 bytes). last: this piece ends
 * the message (the tail is appended, and without context takeover the context
 * is reset). utf8 (may be NULL) validates the output as it is produced.
 * Returns 0, -1009 (output over max), -1007 (corrupt data or invalid UTF-8),
 * or -1011 (out of memory). After an error the context is reset.
 */
int cws_inflater_feed(cws_inflater *f, const void *in, size_t len, int last, cws_buffer *out, uint64_t max,
                      cws_utf8_state *utf8);
void cws_inflater_reset(cws_inflater *f);
size_t cws_inflater_memory(const cws_inflater *f);


/* ------------------------------------------------------------------------
 * The server engine (engine_*.c)
 *
 * One event loop thread per core, each with its own io_uring (or epoll) and
 * its own SO_REUSEPORT listener; a connection lives on one loop for its whole
 * life. Callbacks run on the loop thread that owns the connection and must
 * not block. The send and close functions may be called from any thread:
 * they queue the work to the owning loop and wake it.
 * ------------------------------------------------------------------------ */
typedef struct cws_server cws_server;
typedef struct cws_request cws_request; /* one HTTP request, valid during on_request */
typedef struct cws_msg cws_msg;         /* a framed, reference-counted message */
/* Names one connection for its life; never reused; never 0. */
typedef uint64_t cws_conn_id;

typedef enum cws_backend {
    CWS_BACKEND_AUTO = 0,  /* io_uring where the kernel allows it, else epoll */
    CWS_BACKEND_URING = 1,
    CWS_BACKEND_EPOLL = 2,
} cws_backend;

typedef enum cws_overflow_policy {
    CWS_OVERFLOW_CLOSE = 0, /* a send that would exceed max_send_queue closes with 1008 */
    CWS_OVERFLOW_DROP = 1,  /* the message is dropped and counted */
} cws_overflow_policy;

/*
 * TLS (engine_tls.c, OpenSSL 3): the listener speaks wss:// and https://.
 * The engine keeps the socket I/O (io_uring or epoll) and runs OpenSSL over
 * memory: records read are decrypted in the loop, frames queued are
 * encrypted when the connection's queue is written, several messages in one
 * record where they fit. TLS 1.2 and 1.3, no renegotiation, ALPN http/1.1.
 */
typedef struct cws_tls_identity {
    /* The host name (SNI) this certificate serves: an exact name or
     * "*.example.com". NULL or "": the default, for clients that send no
     * name or one no identity matches (the first identity if none is). */
    const char *server_name;
    const char *certificate_chain_file; /* PEM: the certificate, then its intermediates */
    const char *private_key_file;       /* PEM, unencrypted */
} cws_tls_identity;

typedef struct cws_tls_config {
    const cws_tls_identity *identities;
    uint32_t identity_count;            /* at least 1 */
    /* PEM file of the CAs client certificates must chain to; NULL: none are
     * asked for. */
    const char *client_ca_file;
    uint8_t require_client_certificate; /* with client_ca_file: refuse a client without one */
    /* Kernel TLS for sending: after a TLS 1.3 handshake the session's sending
     * keys go to the kernel (the "tls" ULP), which encrypts what the backend
     * writes; reading stays in user space. 0: off. 1: where the kernel offers
     * it (cws_tls_kernel_offload_available), else records stay in user space.
     * 2: tests only: the same hand-off to a user-space writer of the records
     * the kernel would make. With 1 (on such a kernel) or 2, sessions get no
     * resumption tickets (nothing may be sent under the keys before the
     * hand-off), and a peer that asks for a key update is closed (the kernel
     * cannot send one). */
    uint8_t kernel_offload;
} cws_tls_config;

/* Log levels of on_log. */
enum { CWS_LOG_DEBUG = 0, CWS_LOG_INFO = 1, CWS_LOG_WARNING = 2 };

typedef struct cws_callbacks {
    void *ctx;
    /* Every complete HTTP request head. For a valid WebSocket upgrade `upgrade`
     * is non-NULL: call cws_request_accept to upgrade, or cws_request_respond to
     * refuse. For other requests call cws_request_respond. A request answered
     * by neither gets 404. Invalid upgrades (400/405/426) and malformed heads
     * are answered by the engine without calling this. */
    void (*on_request)(void *ctx, cws_request *req, const cws_http_request *http,
                       const cws_upgrade_info *upgrade);
    /* The 101 response is queued; messages may be sent. */
    void (*on_open)(void *ctx, cws_conn_id id, void *user);
    /* A complete message: TEXT (valid UTF-8) or BINARY. data is valid only
     * during the call. */
    void (*on_message)(void *ctx, cws_conn_id id, void *user, uint8_t opcode, const void *data, size_t len);
    /* Exactly once for every opened connection, last. code is what the peer
     * sent (or 1005/1006, or the code the server failed the connection with).
     * It runs as soon as the close handshake is over (the TCP teardown may
     * still be in progress); from then on the id is stale (-ENOENT). */
    void (*on_close)(void *ctx, cws_conn_id id, void *user, uint16_t code, const void *reason, size_t reason_len);
    /* After cws_request_drain, once the connection's send queue is at or
     * below send_low_water (at once if it already is); requests made before
     * it fires share that one call. Not after its close: on_close is the
     * last callback. May be NULL. */
    void (*on_drain)(void *ctx, cws_conn_id id, void *user);
    /* Once per loop turn, on that loop's thread, after the turn's input and
     * commands were handled and before its output is written: where an
     * application that runs its own work on the loop threads runs it (what it
     * sends there goes out in the same turn). cws_server_wake_loop makes a
     * sleeping loop turn. A loop that dies calls it once more after closing
     * its connections. loop: 0 .. loops-1. May be NULL. */
    void (*on_turn)(void *ctx, uint32_t loop);
    /* A line for the application's log: why a TLS connection ended before
     * it could be a WebSocket (plain HTTP on the TLS port, a failed or
     * stalled handshake, a truncated stream) at CWS_LOG_DEBUG. Engine
     * text only, never the peer's bytes; any loop thread. May be NULL. */
    void (*on_log)(void *ctx, int level, const char *message);
} cws_callbacks;

typedef struct cws_server_config {
    const char *host;              /* bind address: "0.0.0.0", "127.0.0.1", "::1"...; "::" or NULL:
                                      every address, IPv4 and IPv6 (dual-stack) */
    uint16_t port;                 /* 0 = any free port (see cws_server_port) */
    uint8_t share_port;            /* 0 (default): creating fails if another socket already listens
                                      on the address; 1: join it (SO_REUSEPORT shares connections
                                      between every socket of the group, in any process) */
    uint16_t loops;                /* event loops; 0 = one per online CPU */
    uint8_t backend;               /* cws_backend; CWS_BACKEND env var (auto|uring|epoll) overrides AUTO */
    uint8_t overflow_policy;       /* cws_overflow_policy */
    uint32_t max_head_size;        /* request head bytes (default 8 KiB) -> 431 */
    uint32_t handshake_timeout_ms; /* from accept to a complete head (default 10 s); also bounds a
                                      deferred upgrade's answer (503 past it) */
    uint64_t max_message_size;     /* reassembled (and inflated) message bytes (default 1 MiB) -> 1009 */
    uint32_t idle_timeout_ms;      /* no traffic for this long -> ping (default 30 s; 0 = off) */
    uint32_t pong_timeout_ms;      /* no traffic after that ping -> close 1006 (default 10 s) */
    uint32_t close_timeout_ms;     /* wait for the peer's close frame / FIN (default 3 s) */
    uint64_t max_send_queue;       /* queued bytes per connection (default 16 MiB); an empty
                                      queue always takes one message, whatever its size */
    uint32_t max_connections;      /* open WebSocket connections, all loops together; one more
                                      upgrade is answered 503 with Retry-After (it may overshoot
                                      by one per loop). 0 = the process's descriptor limit
                                      (RLIMIT_NOFILE) less headroom: 1/16 of it, at least 64 */
    uint32_t max_pings_per_second; /* pings a peer may send in one second; more: close 1008
                                      (a ping costs a pong and never reaches the application, so
                                      the application's rate limits cannot see a ping flood).
                                      0 = the default, 100; UINT32_MAX = no limit */
    cws_callbacks callbacks;
    cws_deflate_config deflate;    /* permessage-deflate; off by default (see cws_deflate_config) */
    /* For tests of the fallback: io_uring probe steps to treat as missing
     * ("recv-multishot", "cancel-fd", "accept-multishot", "send", "sendmsg",
     * "read"; several may be named). NULL: probe everything for real. */
    const char *uring_disable;
    /* For tests of loop failures: "start:N" makes loop N fail to start (so
     * cws_server_start fails), "wait:N" makes loop N's wait fail for good
     * once it has an open connection. NULL: no faults. */
    const char *fault_inject;
    /* Bytes one loop's inbox of sends from other threads may hold (each
     * command, and each message once per post however many recipients); a
     * send over it returns -EAGAIN, a fan-out skips that loop's recipients
     * (both counted in inbox_refused). It bounds what a loop too busy to read
     * its inbox accumulates. 0 = the default, 64 MiB. */
    uint64_t max_inbox_bytes;
    /* The send queue size at which on_drain fires after cws_request_drain.
     * 0 = the default, 512 KiB. */
    uint64_t send_low_water;
    /* NULL: plain TCP. Else TLS, on the listener of `port` (TLS only there),
     * or beside it (tls_beside_plain); the files are read by
     * cws_server_create (the config and its strings need not outlive it). */
    const cws_tls_config *tls;
    /* With tls: 0 (default): `port` speaks TLS only. 1: `port` stays plain
     * and a second listener on the same host, on tls_port (0: any free port;
     * see cws_server_tls_port), speaks TLS: ws:// and wss:// side by side,
     * one set of loops, connections and limits for both. */
    uint8_t tls_beside_plain;
    uint16_t tls_port;
} cws_server_config;

void cws_server_config_init(cws_server_config *cfg);
/* Binds the listeners (so the port is known) without starting threads. NULL
 * on failure with a message in err. */
cws_server *cws_server_create(const cws_server_config *cfg, char *err, size_t err_cap);
/* Starts the loop threads and waits until each is running: 0, or -errno when
 * one could not start (the others are stopped again; the reason is on stderr). */
int cws_server_start(cws_server *s);
uint16_t cws_server_port(const cws_server *s);
/* The port that speaks TLS: cws_server_port's own without tls_beside_plain,
 * the second listener's with it; 0 for a server without TLS. */
uint16_t cws_server_tls_port(const cws_server *s);
const char *cws_server_backend_name(const cws_server *s); /* "io_uring" or "epoll" */
/* Graceful: stop accepting, close every connection with 1001, wait up to
 * timeout_ms for the close handshakes, then close what is left and join the
 * threads. Callbacks are done when it returns 0. Called from a callback (one
 * of the server's own loop threads, which it cannot join), it begins the stop
 * and returns -EDEADLK at once; call it again from another thread to wait. */
int cws_server_stop(cws_server *s, uint32_t timeout_ms);
/* 1 when called on one of s's loop threads (inside a callback), else 0. */
int cws_server_is_loop_thread(const cws_server *s);
/* The index (0 .. loops-1) of the loop whose thread calls this, or -1 on any
 * other thread (another server's loops included). */
int cws_server_current_loop(const cws_server *s);
/* How many loops s runs. */
uint32_t cws_server_loop_count(const cws_server *s);
/* The loop (0 .. loops-1) whose thread runs a connection's callbacks. */
uint32_t cws_conn_id_loop(cws_conn_id id);
/* From any thread: loop `loop` runs a turn soon (and on_turn with it), even
 * with nothing else to do. 0; -ENOENT for no such loop, -EPIPE when it is
 * not running (not started yet, its thread done, or died). A stopping loop
 * still says 0 and may end without another turn: work that must not be lost
 * is handed on once cws_server_stop has joined the loops. */
int cws_server_wake_loop(cws_server *s, uint32_t loop);
/* On one of s's loop threads: that loop turns again without sleeping (work
 * was queued for its on_turn after on_turn ran). Elsewhere it does nothing:
 * use cws_server_wake_loop. */
void cws_server_turn_again(cws_server *s);
/* Stops (if needed) and frees the server. Never from one of its callbacks:
 * that aborts with a message, since the thread would have to join itself. */
void cws_server_destroy(cws_server *s);
/* From any thread: reads the certificates and keys again (the same files or
 * others) and serves them to every connection accepted from now on; open
 * connections keep theirs. 0, or -1 with the reason in err (the old ones stay
 * in use); -EINVAL for a server without TLS. */
int cws_server_tls_reload(cws_server *s, const cws_tls_config *tls, char *err, size_t err_cap);
/* 1 when the kernel offers kernel TLS (the "tls" upper-layer protocol). */
int cws_tls_kernel_offload_available(void);

typedef struct cws_server_stats {
    uint64_t connections;     /* open now */
    uint64_t accepted;        /* TCP connections accepted, total */
    uint64_t messages_in, bytes_in, messages_out, bytes_out;
    uint64_t dropped;         /* messages dropped by CWS_OVERFLOW_DROP */
    uint64_t sockets;         /* TCP connections held: accepted and not yet freed (handshaking,
                                 open, closing); each holds one descriptor */
    uint64_t accept_errors;   /* accepts that failed for want of descriptors or memory */
    uint64_t accept_pauses;   /* episodes of that: the listener paused until a connection closed */
    uint64_t refused_full;    /* upgrades answered 503 at max_connections */
    uint64_t loops_failed;    /* loops that died (their connections were closed with them) */
    uint64_t inflate_refused; /* compressed messages that inflated past max_inflate_ratio (1009) */
    uint64_t pings_refused;   /* connections closed 1008 for going over max_pings_per_second */
    uint64_t input_deferred;  /* reads kept for a later turn: over a connection's share of one */
    uint64_t inbox_refused;   /* sends from other threads refused (or fan-out recipients skipped)
                                 at max_inbox_bytes */
    uint64_t handshakes_failed; /* requests the engine refused before the application saw them:
                                   a malformed or oversized head, an HTTP version other than 1.x,
                                   an upgrade that breaks RFC 6455 (400/405/426) */
    uint64_t upgrades_deferred; /* upgrade requests waiting now for a deferred answer */
    uint64_t receive_buffers_held; /* io_uring: the loops' shared receive buffers (256 of 16 KiB
                                      each) held now by input kept for a later turn; a stopped
                                      or deferred connection's input is moved out of them */
    uint64_t input_held_bytes;  /* io_uring: bytes read for stopped or deferred connections and
                                   kept, copied, until they read again */
    uint64_t tls_handshakes;        /* TLS handshakes completed */
    uint64_t tls_handshakes_failed; /* TLS connections that ended before their handshake did: not
                                       TLS (plain HTTP on the TLS port), refused, or stalled */
    uint64_t tls_kernel_offloads;   /* TLS connections whose sending went to the kernel (kernel_offload) */
    uint64_t socket_writes;         /* writes to sockets: sendmsg calls (epoll), send requests (io_uring);
                                       over messages_out, how well queued messages are batched */
    uint64_t in_place_sends;        /* messages sent on from the block they arrived in (an echo or relay
                                       from on_message of a message that took more than one read): no copy */
    uint64_t send_contexts;         /* io_uring: sendmsg contexts (2 KiB each) held now, in flight or kept
                                       for reuse; once two ticks pass without needing them, a loop keeps 256 */
    uint64_t send_contexts_made;    /* io_uring: sendmsg contexts allocated so far; beside send_contexts,
                                       how often bursts had to allocate rather than reuse */
    uint64_t send_gather_bytes;     /* io_uring: bytes of gather buffers (256 KiB each) held now, in flight
                                       or kept: a send from a queue of more than 64 messages copies the
                                       small ones into one */
    uint64_t send_gather_bytes_peak; /* io_uring: the most send_gather_bytes has been (each loop's
                                        high-water mark, summed) */
    uint64_t send_rings;            /* connections holding a send-queue ring now (64-512 B each); a
                                       connection idle since its 101 holds none */
} cws_server_stats;
void cws_server_get_stats(const cws_server *s, cws_server_stats *out);

/* Inside on_request: answer with a plain HTTP response (the engine copies
 * everything before returning). headers: extra lines, each ending in CRLF, or
 * NULL. A refused upgrade is answered this way too. */
void cws_request_respond(cws_request *req, int status, const char *content_type,
                         const char *headers, const void *body, size_t body_len);
/* Inside on_request for an upgrade: accept it. protocol (may be NULL) is echoed
 * in Sec-WebSocket-Protocol; user is handed back in every callback for this
 * connection. Returns the new connection's id. */
cws_conn_id cws_request_accept(cws_request *req, const char *protocol, void *user);
/* "ip:port" / "[ipv6]:port" of the peer. */
const char *cws_request_remote(const cws_request *req);
/* On a TLS connection, the host name the client asked for (SNI; "" if it
 * named none); NULL on a plain connection. */
const char *cws_request_tls_server_name(const cws_request *req);

/*
 * Deferred upgrades (engine_deferred.c): the decision awaits something (a
 * session store, a key set) and is answered later, from any thread.
 *
 * Inside on_request for an upgrade: cws_request_defer answers "later" and
 * returns the id the connection will have (0 if out of memory, or not an
 * upgrade, or already answered). Copy what the decision needs from `http`
 * and `upgrade` first: they are valid only during on_request. Until the
 * answer the socket is not read, so frames a client sends without waiting
 * for the 101 are kept (or stay in the kernel) and are delivered in order
 * after on_open. A deferred upgrade counts against max_connections from
 * here on, as an open connection does.
 *
 * The handshake timeout still runs from the TCP accept: a request not
 * answered in time gets "503 Service Unavailable" (Retry-After: 5) and is
 * closed, as is every one still waiting when the server stops. 503, not
 * 408: the client sent its whole request; the server failed to decide.
 *
 * Then exactly one of the two answers, once, from any thread (the loop
 * applies it when it next reads its inbox):
 * - cws_deferred_accept: the 101, naming protocol (may be NULL); user is
 *   handed back in every callback. 0: the engine took user: on_open and
 *   on_close will come for it, even if the peer left meanwhile (then on_close
 *   follows on_open at once with 1006).
 * - cws_deferred_respond: a plain HTTP answer, then close (as
 *   cws_request_respond; everything is copied before it returns).
 * Both return -ENOENT when the request is no longer waiting (timed out,
 * stopped, the peer left, answered already): the caller keeps user and must
 * release it itself; no callback will ever see it. Any other negative
 * value (the loop's inbox refused the command): likewise.
 */
cws_conn_id cws_request_defer(cws_request *req);
int cws_deferred_accept(cws_server *s, cws_conn_id id, const char *protocol, void *user);
int cws_deferred_respond(cws_server *s, cws_conn_id id, int status, const char *content_type, const char *headers,
                         const void *body, size_t body_len);

/* A message framed once for any number of recipients (server role: unmasked). */
cws_msg *cws_msg_new(uint8_t opcode, const void *data, size_t len);
void cws_msg_retain(cws_msg *m);
void cws_msg_release(cws_msg *m);

/* Queue a message to one connection (the engine takes its own reference).
 * 0, -ENOENT when the connection is gone, or (from a thread other than the
 * connection's loop) -EAGAIN when that loop's inbox is at max_inbox_bytes:
 * nothing was queued; cws_request_drain tells when to try again. */
int cws_send_msg(cws_server *s, cws_conn_id id, cws_msg *m);
/* Copying convenience: frame and send data to one connection. */
int cws_send(cws_server *s, cws_conn_id id, uint8_t opcode, const void *data, size_t len);
/* One message to many connections: one wake-up per loop, not per recipient. */
void cws_send_msg_many(cws_server *s, const cws_conn_id *ids, size_t count, cws_msg *m);
/* Start the close handshake with this code and reason. */
int cws_close(cws_server *s, cws_conn_id id, uint16_t code, const void *reason, size_t reason_len);
/* Flow control: cws_pause_reading stops reading this connection's socket, so
 * TCP holds the peer back (its writes block once the socket buffers fill);
 * cws_resume_reading reads it again. Pauses are counted: the socket is read
 * once every pause has been resumed (so a pause on the loop thread and a
 * resume from another, which take effect in either order, cannot leave it
 * stopped). Messages already read when a pause takes effect are still
 * delivered: at most one read's worth (64 KiB of input). While stopped the
 * connection is not idle (no keep-alive ping, no idle close); a close frame
 * sent to it resumes reading for good, so the close handshake completes.
 * Any thread; from another thread it takes effect when the loop runs the
 * command. 0 or -ENOENT. */
int cws_pause_reading(cws_server *s, cws_conn_id id);
int cws_resume_reading(cws_server *s, cws_conn_id id);
/* Bytes waiting to be written to the connection: its send queue, plus the
 * sends other threads have posted that its loop has not taken yet (as sent,
 * before compression). Any thread; a snapshot that never misses a message
 * and, read while the loop takes one, may count that one twice (it is in the
 * queue before it is marked taken). -ENOENT when it is gone. */
int64_t cws_buffered_amount(cws_server *s, cws_conn_id id);
/* Asks for one on_drain once the connection's send queue is at or below
 * send_low_water. Taken in order with this thread's earlier sends to it, so
 * they are counted. Any thread; 0, -ENOENT, or -ENOMEM (the request could not
 * be queued). The way to wait for room without polling: call
 * cws_buffered_amount, and when it is too high, this. */
int cws_request_drain(cws_server *s, cws_conn_id id);

#ifdef __cplusplus
}
#endif
#endif /* CWEBSOCKET_H */
