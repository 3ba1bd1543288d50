/*
 * steernpc.h — the C ABI of the SteerNPC native client core (libsteernpc).
 *
 * One client core serves every engine: Unity calls it through P/Invoke, Unreal links it as a
 * ThirdParty module, anything else that can call C can use it too. It talks gRPC
 * (steernpc.v1.NpcService, proto/steernpc/v1/npc.proto) to a `steernpc serve` server.
 *
 * THREADING
 *   - Every function is thread-safe and may be called from any thread.
 *   - Each client owns one background thread that drives its gRPC completion queue (and one
 *     that starts calls, so that npc_say costs the caller microseconds). Streamed replies
 *     (npc_say, npc_scene_say, npc_scene_continue) arrive on the completion-queue thread and are queued; the game thread collects
 *     them with npc_poll(), typically once per frame. No callback ever runs on an engine
 *     thread: there are no callbacks at all.
 *   - npc_say, npc_scene_say, npc_scene_continue, npc_cancel and npc_poll never block on the
 *     network.
 *   - The unary calls (npc_list_characters, npc_session_*, npc_steer, and the other npc_scene_*
 *     calls) block the calling
 *     thread for at most the client's default deadline. Call them at load time, or from a
 *     worker thread if a frame hitch matters.
 *
 * ERRORS
 *   Status codes are the gRPC codes, named in npc_status (NPC_OK, NPC_NOT_FOUND, ...).
 *   Functions returning int: a value >= 0 means success; a negative value is the negated status
 *   of the failure (e.g. -NPC_NOT_FOUND, -NPC_UNAVAILABLE, -NPC_UNAUTHENTICATED; local argument
 *   errors are -NPC_INVALID_ARGUMENT). npc_last_error() / npc_last_error_code() give the message
 *   and status of the last failure on the calling thread. Failures of a streamed reply arrive as
 *   an NPC_EVENT_ERROR event instead.
 *
 * RESULTS
 *   Calls that return text or bytes (npc_list_characters, npc_session_create[_ex],
 *   npc_session_get, npc_session_export, npc_session_import, npc_scene_create, npc_scene_get,
 *   npc_scene_export, npc_scene_import) return an npc_result*: the caller
 *   owns it and frees it with npc_result_free. It holds the whole answer of ONE call, however
 *   long: there is no buffer to size and no call to repeat (each of these calls is one RPC).
 *   npc_result_status() is NPC_OK or the failure's status; npc_result_text() /
 *   npc_result_data() with npc_result_size() give the value, or the error message on failure
 *   (which npc_last_error() also reports). These functions never return NULL.
 *
 * ATTRIBUTE STRINGS
 *   Attribute vectors travel as "name:value,name:value" (whitespace ignored, '=' accepted for
 *   ':'), e.g. "humor:4,verbosity:1". NULL or "" means none. Applied attributes in a done event
 *   use the same form, sorted by name.
 *
 * SCENES
 *   A scene is several NPCs (members) and the player in one conversation (README "Scenes").
 *   npc_scene_say (the player's line) and npc_scene_continue (members answering each other) are
 *   requests like npc_say, with one request id, cancelled with npc_cancel, but they stream
 *   SEVERAL lines: for each speaking member, NPC_EVENT_DELTA events and then one NPC_EVENT_DONE,
 *   both naming the speaker; then one NPC_EVENT_SCENE_END closes the request (or an
 *   NPC_EVENT_ERROR, when the server failed it). npc_poll_ex gives the speaker (member id and
 *   name) and the scene; npc_poll gives the rest, with session_id = the scene's id.
 *
 * RECONNECTION
 *   The client keeps one gRPC channel. When the server goes away, calls fail fast with
 *   NPC_UNAVAILABLE (14) — a failed result or negative return for unary calls, an NPC_EVENT_ERROR
 *   event for replies in flight — and the channel reconnects in the background with exponential backoff (250 ms up to
 *   npc_client_options.max_reconnect_backoff_ms, default 5000 ms). Nothing needs recreating: the
 *   same client works again once the server is back. npc_client_state() reports the state.
 */
#ifndef STEERNPC_H
#define STEERNPC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#  if defined(STEERNPC_BUILDING)
#    define NPC_API __declspec(dllexport)
#  elif defined(STEERNPC_STATIC)
#    define NPC_API
#  else
#    define NPC_API __declspec(dllimport)
#  endif
#else
#  define NPC_API __attribute__((visibility("default")))
#endif

/** Status codes: the gRPC codes (grpc::StatusCode). npc_last_error_code, npc_result_status and
 *  npc_event.status_code report them as they are; int results report a failure as their
 *  negation (-NPC_NOT_FOUND). */
typedef enum npc_status {
    NPC_OK = 0,
    NPC_CANCELLED = 1,
    NPC_UNKNOWN = 2,
    NPC_INVALID_ARGUMENT = 3,
    NPC_DEADLINE_EXCEEDED = 4,
    NPC_NOT_FOUND = 5,
    NPC_ALREADY_EXISTS = 6,
    NPC_PERMISSION_DENIED = 7,
    NPC_RESOURCE_EXHAUSTED = 8,
    NPC_FAILED_PRECONDITION = 9,
    NPC_ABORTED = 10,
    NPC_OUT_OF_RANGE = 11,
    NPC_UNIMPLEMENTED = 12,
    NPC_INTERNAL = 13,
    NPC_UNAVAILABLE = 14,
    NPC_DATA_LOSS = 15,
    NPC_UNAUTHENTICATED = 16
} npc_status;

/** An opaque client: one channel, one completion-queue thread, one event queue. */
typedef struct npc_client npc_client;

/** The owned answer of one call that returns text or bytes (see RESULTS at the top). */
typedef struct npc_result npc_result;

/** Identifies one npc_say reply; > 0. Unique within a client. */
typedef int64_t npc_request_id;

/** Options for npc_client_create. Zero-initialise, then set what you need. */
typedef struct npc_client_options {
    /** Server address, e.g. "127.0.0.1:50051" or "dns:///npc.example.com:443". Required. */
    const char* target;
    /** Sent as "authorization: Bearer <api_key>" on every call. NULL or "" = none. */
    const char* api_key;
    /** PEM root certificates for TLS. NULL with use_tls = 0: plaintext. NULL with use_tls = 1:
     *  the system roots. Non-NULL implies TLS. */
    const char* root_certs_pem;
    /** 1 = TLS (see root_certs_pem), 0 = plaintext unless root_certs_pem is set. */
    int32_t use_tls;
    /** Deadline of each blocking unary call, ms. 0 = 10000. */
    int32_t default_deadline_ms;
    /** Deadline of a whole streamed reply (npc_say), ms. 0 = none. */
    int32_t say_deadline_ms;
    /** Upper bound of the reconnect backoff, ms. 0 = 5000. */
    int32_t max_reconnect_backoff_ms;
    /** 1 = calls wait (up to their deadline) for the server instead of failing fast with
     *  UNAVAILABLE while it is unreachable. 0 (default) = fail fast. */
    int32_t wait_for_ready;
} npc_client_options;

typedef enum npc_event_type {
    NPC_EVENT_NONE = 0,
    /** A piece of the reply text (text). */
    NPC_EVENT_DELTA = 1,
    /** The reply finished: full text, finish_reason, applied attributes, usage. Last event. */
    NPC_EVENT_DONE = 2,
    /** The reply failed: status_code (gRPC code), text = message. Last event. */
    NPC_EVENT_ERROR = 3,
    /** Scene requests only (npc_scene_say / npc_scene_continue): the request is over, after the
     *  done of its last line. finish_reason: NPC_FINISH_CANCELLED when it was cancelled
     *  (npc_cancel) or interrupted (a new npc_scene_say on the scene ends a running
     *  npc_scene_continue), else NPC_FINISH_STOP. npc_event_ex.line = the lines it produced.
     *  Last event. A session reply (npc_say) never has one: its done is its last event. */
    NPC_EVENT_SCENE_END = 4
} npc_event_type;

/** Values of npc_event.finish_reason (steernpc.v1.FinishReason). */
typedef enum npc_finish_reason {
    NPC_FINISH_UNSPECIFIED = 0,
    NPC_FINISH_STOP = 1,
    NPC_FINISH_LENGTH = 2,
    NPC_FINISH_CANCELLED = 3
} npc_finish_reason;

/**
 * One event from npc_poll. Fixed layout, only scalars and pointers, so it marshals to C# as a
 * plain sequential struct (IntPtr for the strings).
 *
 * The string fields are owned by the library: they are never NULL (an absent value is ""), are
 * UTF-8 and NUL-terminated, and stay valid until the next npc_poll / npc_poll_wait call made by
 * the SAME thread (on any client). Copy them if you need them longer. Nothing is to be freed.
 */
typedef struct npc_event {
    npc_request_id request_id;   /* the npc_say this event belongs to */
    int32_t type;                /* npc_event_type */
    int32_t finish_reason;       /* DONE: npc_finish_reason */
    int32_t status_code;         /* ERROR: npc_status (e.g. NPC_NOT_FOUND, NPC_UNAVAILABLE) */
    int32_t prompt_tokens;       /* DONE: usage reported by the server */
    int32_t completion_tokens;   /* DONE */
    float server_ttft_ms;        /* DONE: server-side time to first token */
    float server_total_ms;       /* DONE: server-side total time */
    int32_t text_len;            /* bytes in text, without the NUL */
    const char* text;            /* DELTA: the piece; DONE: full reply; ERROR: message */
    const char* attributes;      /* DONE: applied vector, "name:value,..." sorted by name */
    const char* session_id;      /* the session the reply belongs to (scene events: the scene) */
    const char* interaction_id;  /* the wire interaction id (what the server logs) */
} npc_event;

/**
 * npc_event plus what a scene event carries (npc_poll_ex). The same rules as npc_event: strings
 * owned by the library, never NULL, valid until the next poll by the same thread.
 * For events of a session reply the scene fields are "" and line is 0.
 */
typedef struct npc_event_ex {
    npc_event event;             /* exactly what npc_poll_wait would have written */
    const char* scene_id;        /* the scene ("" for a session reply) */
    const char* speaker_id;      /* DELTA / DONE: the member speaking this line */
    const char* speaker;         /* DELTA / DONE: the name it speaks under (e.g. "Brom") */
    int32_t line;                /* DELTA / DONE: 0-based index of the line within its request;
                                    SCENE_END: the number of lines the request produced */
    int32_t reserved;            /* 0 */
} npc_event_ex;

/** Per-reply options for npc_say_ex. Zero-initialise; 0 / NULL fields take server defaults. */
typedef struct npc_say_options {
    const char* attributes;      /* this reply only, "name:value,..." */
    int32_t max_new_tokens;
    float temperature;
    float top_p;
    int32_t top_k;
    uint64_t seed;
} npc_say_options;

/** Options for npc_session_create_ex. Zero-initialise; character_id is required. */
typedef struct npc_session_options {
    const char* character_id;
    const char* session_id;      /* optional, client-chosen */
    const char* mood;            /* optional */
    const char* attributes;      /* optional session-level steer, "name:value,..." */
    const char* player_name;     /* optional */
} npc_session_options;

/** One scene member (npc_scene_create, npc_scene_join). Zero-initialise; character_id is
 *  required. */
typedef struct npc_scene_member {
    const char* character_id;
    const char* member_id;       /* optional: the character id */
    const char* name;            /* optional: the character's name */
    const char* mood;            /* optional */
    const char* attributes;      /* optional member-level steer, "name:value,..." */
} npc_scene_member;

/** Options for npc_scene_create. Zero-initialise; everything is optional. */
typedef struct npc_scene_options {
    const char* scene_id;        /* client-chosen id; NULL/"" = the server picks one */
    const char* player_name;
    /** Game context shown to every member: "key=value" items, one per line ('\n'). */
    const char* context;
    uint64_t seed;               /* the speaking policy's tie-break seed; 0 = random */
    const npc_scene_member* members;  /* initial members (may be NULL when member_count = 0) */
    int32_t member_count;
} npc_scene_options;

/** Channel connectivity, as grpc_connectivity_state. */
typedef enum npc_client_state_t {
    NPC_STATE_IDLE = 0,
    NPC_STATE_CONNECTING = 1,
    NPC_STATE_READY = 2,
    NPC_STATE_TRANSIENT_FAILURE = 3,
    NPC_STATE_SHUTDOWN = 4
} npc_client_state_t;

/* ---------------------------------------------------------------------------------------- */
/* Library                                                                                   */

/** The library's version, "MAJOR.MINOR.PATCH": the `version` of the repository's
 *  pyproject.toml, written in at build time (the one source of the version). Static string. */
NPC_API const char* npc_version(void);

/** Message of the last failure on this thread ("" if none). Valid until the next failing call
 *  on this thread. */
NPC_API const char* npc_last_error(void);

/** npc_status of the last failure on this thread (NPC_OK if none). */
NPC_API int32_t npc_last_error_code(void);

/* ---------------------------------------------------------------------------------------- */
/* Client                                                                                    */

/** Create a client. Does not connect yet (the first call does). NULL on bad options; see
 *  npc_last_error(). */
NPC_API npc_client* npc_client_create(const npc_client_options* options);

/** Cancel every reply in flight, stop the background thread and free the client. Events not
 *  yet polled are dropped. Must not race with other calls on the same client. NULL is ignored. */
NPC_API void npc_client_destroy(npc_client* client);

/** Current channel state (npc_client_state_t). try_to_connect = 1 starts connecting if idle. */
NPC_API int32_t npc_client_state(npc_client* client, int32_t try_to_connect);

/** Block up to timeout_ms until the channel is READY (connecting if needed). 0 on success,
 *  -NPC_UNAVAILABLE on timeout. */
NPC_API int32_t npc_client_wait_connected(npc_client* client, int32_t timeout_ms);

/* ---------------------------------------------------------------------------------------- */
/* Results                                                                                   */

/** NPC_OK, or the npc_status of the failure. NULL: NPC_INVALID_ARGUMENT. */
NPC_API int32_t npc_result_status(const npc_result* result);

/** The value (NPC_OK) or the error message, UTF-8 and NUL-terminated; never NULL (NULL result:
 *  ""). Binary values (npc_session_export) may contain NULs: use npc_result_size. Valid until
 *  npc_result_free. */
NPC_API const char* npc_result_text(const npc_result* result);

/** The same bytes as npc_result_text, for binary values. */
NPC_API const uint8_t* npc_result_data(const npc_result* result);

/** Bytes in the value (or message), without the terminating NUL. */
NPC_API size_t npc_result_size(const npc_result* result);

/** Free a result. NULL is ignored. */
NPC_API void npc_result_free(npc_result* result);

/* ---------------------------------------------------------------------------------------- */
/* Characters and sessions (blocking, default deadline; one RPC each)                        */

/** The server's characters as a JSON array (steernpc.v1.Character objects with proto field
 *  names: id, name, role, attributes, moods, greeting, schema, limits). */
NPC_API npc_result* npc_list_characters(npc_client* client);

/** Create a session for character_id; the result is its id. NPC_NOT_FOUND for an unknown
 *  character. */
NPC_API npc_result* npc_session_create(npc_client* client, const char* character_id);

/** npc_session_create with mood, attributes, player name or a client-chosen id. */
NPC_API npc_result* npc_session_create_ex(npc_client* client, const npc_session_options* options);

/** The session as JSON (steernpc.v1.Session: session_id, character_id, mood, attributes,
 *  turns). */
NPC_API npc_result* npc_session_get(npc_client* client, const char* session_id);

/** Delete a session. 0 on success. */
NPC_API int32_t npc_session_delete(npc_client* client, const char* session_id);

/** Steer a session for the rest of its life: mood (NULL/"" = keep) and attributes
 *  ("name:value,...", NULL/"" = none). 0 on success; -NPC_INVALID_ARGUMENT with the field named
 *  for an unknown attribute or an out-of-range value. */
NPC_API int32_t npc_steer(npc_client* client, const char* session_id, const char* mood,
                          const char* attributes);

/** npc_steer with clear = 1: drop earlier mood and steer overrides first. */
NPC_API int32_t npc_steer_ex(npc_client* client, const char* session_id, const char* mood,
                             const char* attributes, int32_t clear);

/** Snapshot a session (msgpack bytes, for save games): npc_result_data / npc_result_size. */
NPC_API npc_result* npc_session_export(npc_client* client, const char* session_id);

/** Restore a snapshot; the result is the session's id. */
NPC_API npc_result* npc_session_import(npc_client* client, const uint8_t* data, size_t len);

/* ---------------------------------------------------------------------------------------- */
/* Replies (non-blocking)                                                                    */

/** Start a streamed reply to `text` in a session. Returns its request id (> 0), or a negative
 *  status (-NPC_INVALID_ARGUMENT: bad arguments, e.g. an unparsable attribute string). Everything else — unknown
 *  session, server down, bad attribute values — arrives as an NPC_EVENT_ERROR event.
 *  attribute_overrides: this reply only, "name:value,..." or NULL. */
NPC_API npc_request_id npc_say(npc_client* client, const char* session_id, const char* text,
                               const char* attribute_overrides);

/** npc_say with generation options. options may be NULL. */
NPC_API npc_request_id npc_say_ex(npc_client* client, const char* session_id, const char* text,
                                  const npc_say_options* options);

/** Ask the server to stop a reply. The reply then ends with an NPC_EVENT_DONE whose
 *  finish_reason is NPC_FINISH_CANCELLED (or with its normal done if it had already finished).
 *  0 if the request was in flight, -NPC_NOT_FOUND if it is unknown or already finished.
 *  Non-blocking. */
NPC_API int32_t npc_cancel(npc_client* client, npc_request_id request_id);

/** Take the next event, if any. 1 = an event was written to *out, 0 = none (out->type =
 *  NPC_EVENT_NONE), negative = bad arguments. Never blocks. */
NPC_API int32_t npc_poll(npc_client* client, npc_event* out);

/** npc_poll that waits up to timeout_ms for an event (for tools and tests; a game loop should
 *  use npc_poll). */
NPC_API int32_t npc_poll_wait(npc_client* client, npc_event* out, int32_t timeout_ms);

/** Number of replies in flight (started, final event not yet queued). Scene requests count
 *  until their NPC_EVENT_SCENE_END (or error). */
NPC_API int32_t npc_pending(npc_client* client);

/** npc_poll_wait that also gives the scene fields (npc_event_ex). timeout_ms = 0: never blocks
 *  (what a game loop calls once a frame). 1 = an event, 0 = none, negative = bad arguments. */
NPC_API int32_t npc_poll_ex(npc_client* client, npc_event_ex* out, int32_t timeout_ms);

/* ---------------------------------------------------------------------------------------- */
/* Scenes: several NPCs in one conversation (see SCENES at the top)                          */
/* Blocking calls use the default deadline and make one RPC each. Statuses: an unknown scene  */
/* or member is NPC_NOT_FOUND; a scene without members (or banter with fewer than two) is     */
/* NPC_FAILED_PRECONDITION; a bad vector is NPC_INVALID_ARGUMENT naming the member and field. */

/** Create a scene; the result is its id. */
NPC_API npc_result* npc_scene_create(npc_client* client, const npc_scene_options* options);

/** The scene as JSON (steernpc.v1.Scene: scene_id, player_name, members [member_id,
 *  character_id, name, mood, attributes, lines], lines, last_speaker_id, seed; with
 *  include_transcript = 1 also transcript [speaker_id, speaker, text]). */
NPC_API npc_result* npc_scene_get(npc_client* client, const char* scene_id, int32_t include_transcript);

/** Delete a scene (a running line of it stops). 0 on success. */
NPC_API int32_t npc_scene_delete(npc_client* client, const char* scene_id);

/** Add a member mid-scene (it hears the lines from now on). 0 on success; NPC_ALREADY_EXISTS
 *  for a member id already present, NPC_FAILED_PRECONDITION when the scene is full. */
NPC_API int32_t npc_scene_join(npc_client* client, const char* scene_id, const npc_scene_member* member);

/** A member leaves (its lines stay in the transcript). 0 on success. */
NPC_API int32_t npc_scene_leave(npc_client* client, const char* scene_id, const char* member_id);

/** Steer one member for the rest of the scene, as npc_steer_ex does a session. 0 on success. */
NPC_API int32_t npc_scene_steer(npc_client* client, const char* scene_id, const char* member_id,
                                const char* mood, const char* attributes, int32_t clear);

/** The player says `text` to the scene. member_ids: the members addressed, in answer order,
 *  "brom,marta" (NULL/"" = the speaking policy picks: a name in the text, else the last
 *  speaker, else the seeded tie-break). options (may be NULL): options->attributes apply to the
 *  responders' lines only. Returns the request id (> 0) or -NPC_INVALID_ARGUMENT; failures on
 *  the server (unknown scene or member, empty scene) arrive as an NPC_EVENT_ERROR event. A
 *  running npc_scene_continue of the scene ends (cancelled) before the answer. Non-blocking. */
NPC_API npc_request_id npc_scene_say(npc_client* client, const char* scene_id, const char* text,
                                     const char* member_ids, const npc_say_options* options);

/** Up to `turns` (1..32) lines of members answering each other (ambient banter). options may be
 *  NULL; options->attributes must be NULL (banter lines use each member's own vector).
 *  npc_cancel ends it at the next step: the running line ends cancelled, no other starts.
 *  Non-blocking; returns the request id or -NPC_INVALID_ARGUMENT. */
NPC_API npc_request_id npc_scene_continue(npc_client* client, const char* scene_id, int32_t turns,
                                          const npc_say_options* options);

/** Snapshot a scene (versioned msgpack, for save games): npc_result_data / npc_result_size. */
NPC_API npc_result* npc_scene_export(npc_client* client, const char* scene_id);

/** Restore a scene snapshot (an old single-session snapshot becomes a one-member scene); the
 *  result is the scene's id. An existing scene with that id is replaced. */
NPC_API npc_result* npc_scene_import(npc_client* client, const uint8_t* data, size_t len);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* STEERNPC_H */
