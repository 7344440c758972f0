// Netlink sockets for podflow's conntrack source (ctnetlink dumps and DESTROY events).
//
// Thin on purpose: the kernel calls and a libuv poll handle, nothing else. Framing and parsing live
// in TypeScript (collector/netfilter/). Every system call reports failure as a value (a negative
// errno), never as a throw: ENOBUFS on an events socket is an expected condition (the kernel dropped
// events), and the caller counts it and keeps reading. Only misuse (wrong argument types) throws.
//
// Receiving never blocks: sockets are non-blocking, and a poll handle on the event loop says when a
// datagram is waiting. `recv` copies as many datagrams as fit into a Buffer the caller owns, so a
// 250k-entry dump (~60 MB) passes through one reused buffer instead of one allocation per datagram.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/netlink.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "napi_util.h"

#ifndef SO_RCVBUFFORCE
#define SO_RCVBUFFORCE 33
#endif

// --- open(protocol): fd | -errno -------------------------------------------------------------------

static napi_value nl_open(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  int32_t protocol = 0;
  NAPI_CALL(env, napi_get_value_int32(env, argv[0], &protocol));
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
  if (fd < 0) return make_int(env, -errno);
  struct sockaddr_nl addr;
  memset(&addr, 0, sizeof addr);
  addr.nl_family = AF_NETLINK;  // nl_pid 0: the kernel assigns our port id
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    int err = errno;
    close(fd);
    return make_int(env, -err);
  }
  return make_int(env, fd);
}

// --- setRecvBuffer(fd, bytes): granted | -errno ------------------------------------------------------
// SO_RCVBUFFORCE (CAP_NET_ADMIN, which reading conntrack needs anyway) is not capped by
// net.core.rmem_max; without the capability, SO_RCVBUF (capped). Returns what the kernel granted
// (it doubles the asked value for its own bookkeeping).

static napi_value nl_set_recv_buffer(napi_env env, napi_callback_info info) {
  FD_ARGS(env, info, 2);
  int32_t bytes = 0;
  NAPI_CALL(env, napi_get_value_int32(env, argv[1], &bytes));
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0) {
    if (errno != EPERM) return make_int(env, -errno);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes) != 0) return make_int(env, -errno);
  }
  int granted = 0;
  socklen_t len = sizeof granted;
  if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &granted, &len) != 0) return make_int(env, -errno);
  return make_int(env, granted);
}

// --- addMembership(fd, group): 0 | -errno -------------------------------------------------------------

static napi_value nl_add_membership(napi_env env, napi_callback_info info) {
  FD_ARGS(env, info, 2);
  int32_t group = 0;
  NAPI_CALL(env, napi_get_value_int32(env, argv[1], &group));
  return errno_result(env, setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group));
}

// --- send(fd, buf): bytes | -errno ------------------------------------------------------------------

static napi_value nl_send(napi_env env, napi_callback_info info) {
  FD_ARGS(env, info, 2);
  void *data = NULL;
  size_t len = 0;
  if (!get_buffer(env, argv[1], &data, &len)) return NULL;
  struct sockaddr_nl to;
  memset(&to, 0, sizeof to);
  to.nl_family = AF_NETLINK;  // nl_pid 0: the kernel
  ssize_t n;
  do {
    n = sendto(fd, data, len, 0, (struct sockaddr *)&to, sizeof to);
  } while (n < 0 && errno == EINTR);
  return make_int(env, n < 0 ? -errno : n);
}

// --- recv(fd, buf, offset, slot, info): end ----------------------------------------------------------
// Appends datagrams to buf from `offset` (rounded up to 4, where netlink messages align) while at
// least `slot` bytes are free, and returns the offset after the last one. Stops when the socket has
// nothing more (EAGAIN) or the buffer is full. `info` (Int32Array of 4) receives:
//   [0] datagrams appended, [1] datagrams cut short (larger than the space left: not appended),
//   [2] ENOBUFS reports (the kernel dropped messages for this socket; reading goes on),
//   [3] the errno that stopped the loop (0: none, it stopped on EAGAIN or a full buffer).
// MSG_TRUNC makes recv return a datagram's real length, so a cut is detected without a peek.
// For a dump the kernel builds the next datagram inside each recv call, sized to the space we offer
// (capped at 32 KiB): offering at least 32 KiB gets the largest datagrams, so the fewest calls.

static napi_value nl_recv(napi_env env, napi_callback_info info) {
  FD_ARGS(env, info, 5);
  uint32_t offset = 0, slot = 0;
  void *data = NULL;
  size_t len = 0;
  if (!get_buffer(env, argv[1], &data, &len)) return NULL;
  NAPI_CALL(env, napi_get_value_uint32(env, argv[2], &offset));
  NAPI_CALL(env, napi_get_value_uint32(env, argv[3], &slot));
  int32_t *out = get_recv_info(env, argv[4]);
  if (out == NULL) return NULL;
  if (slot == 0) slot = 1;
  uint8_t *buf = data;
  size_t off = align4_within(offset, len);
  while (len - off >= slot) {
    ssize_t n = recv(fd, buf + off, len - off, MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      if (err == ENOBUFS) {  // reported once per overrun, then cleared: go on reading
        out[2]++;
        continue;
      }
      out[3] = err;
      break;
    }
    if ((size_t)n > len - off) {
      out[1]++;
      continue;
    }
    size_t next = align4_within(off + (size_t)n, len);
    memset(buf + off + n, 0, next - off - (size_t)n);
    off = next;
    out[0]++;
  }
  return make_int(env, (int64_t)off);
}

// --- poll handles --------------------------------------------------------------------------------
// poll(fd, callback): handle. The callback gets (status): 0 when the socket is readable, a negative
// errno when libuv saw an error condition on it (POLLERR: for a netlink socket, a pending ENOBUFS).
// libuv stops the handle after an error: the caller reads (which clears the error) and starts it
// again. An exception thrown by the callback goes to process 'uncaughtException' like any other.

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  bool closing;
} nl_poll_t;

static void on_poll(uv_poll_t *handle, int status, int events) {
  (void)events;
  nl_poll_t *p = handle->data;
  if (p->closing) return;
  napi_env env = p->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value callback, recv, arg, result;
  if (napi_get_reference_value(env, p->callback, &callback) == napi_ok && callback != NULL &&
      napi_get_global(env, &recv) == napi_ok && napi_create_int32(env, status, &arg) == napi_ok) {
    // make_callback (not call_function): runs the microtasks the callback queued, e.g. a resolved
    // dump promise's continuation.
    if (napi_make_callback(env, p->context, recv, callback, 1, &arg, &result) != napi_ok) {
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (pending) {
        napi_value err;
        if (napi_get_and_clear_last_exception(env, &err) == napi_ok) napi_fatal_exception(env, err);
      }
    }
  }
  napi_close_handle_scope(env, scope);
}

static void on_close(uv_handle_t *handle) {
  nl_poll_t *p = handle->data;
  napi_env env = p->env;
  napi_handle_scope scope;
  bool scoped = napi_open_handle_scope(env, &scope) == napi_ok;
  napi_delete_reference(env, p->callback);
  napi_async_destroy(env, p->context);
  if (scoped) napi_close_handle_scope(env, scope);
  free(p);
}

static nl_poll_t *get_poll(napi_env env, napi_value value) {
  void *p = NULL;
  if (napi_get_value_external(env, value, &p) != napi_ok || p == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "podflow native: expected a poll handle");
    return NULL;
  }
  if (((nl_poll_t *)p)->closing) {
    napi_throw_error(env, "ERR_INVALID_STATE", "podflow native: poll handle is closed");
    return NULL;
  }
  return p;
}

static napi_value nl_poll(napi_env env, napi_callback_info info) {
  FD_ARGS(env, info, 2);
  napi_valuetype t;
  NAPI_CALL(env, napi_typeof(env, argv[1], &t));
  if (t != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "podflow native: poll callback must be a function");
    return NULL;
  }
  uv_loop_t *loop = NULL;
  NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));
  nl_poll_t *p = calloc(1, sizeof *p);
  if (p == NULL) return throw_errno(env, ENOMEM, "calloc", "poll handle");
  p->env = env;
  int rc = uv_poll_init(loop, &p->poll, fd);
  if (rc != 0) {
    free(p);
    return throw_errno(env, -rc, "uv_poll_init", "uv_poll_init");
  }
  p->poll.data = p;
  napi_value name, external;
  if (napi_create_reference(env, argv[1], 1, &p->callback) != napi_ok ||
      napi_create_string_utf8(env, "podflow:netlink", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &p->context) != napi_ok ||
      napi_create_external(env, p, NULL, NULL, &external) != napi_ok) {
    p->closing = true;
    uv_close((uv_handle_t *)&p->poll, on_close);
    throw_napi_failure(env, napi_generic_failure, "poll handle setup");
    return NULL;
  }
  return external;
}

// pollStart(handle): 0 | -errno; pollStop(handle); pollRef(handle, ref); pollClose(handle)

static napi_value nl_poll_start(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  nl_poll_t *p = get_poll(env, argv[0]);
  if (p == NULL) return NULL;
  return make_int(env, uv_poll_start(&p->poll, UV_READABLE, on_poll));
}

static napi_value nl_poll_stop(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  nl_poll_t *p = get_poll(env, argv[0]);
  if (p == NULL) return NULL;
  return make_int(env, uv_poll_stop(&p->poll));
}

static napi_value nl_poll_ref(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  nl_poll_t *p = get_poll(env, argv[0]);
  if (p == NULL) return NULL;
  bool ref = false;
  NAPI_CALL(env, napi_get_value_bool(env, argv[1], &ref));
  if (ref)
    uv_ref((uv_handle_t *)&p->poll);
  else
    uv_unref((uv_handle_t *)&p->poll);
  return make_int(env, 0);
}

// Stops and frees the handle (the fd stays open: close it afterwards with close(fd)).
static napi_value nl_poll_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  nl_poll_t *p = get_poll(env, argv[0]);
  if (p == NULL) return NULL;
  p->closing = true;
  uv_poll_stop(&p->poll);
  uv_close((uv_handle_t *)&p->poll, on_close);
  return make_int(env, 0);
}

// --- closeFd(fd): 0 | -errno (any fd of the addon: sockets and BPF maps) ------------------------------

static napi_value close_fd(napi_env env, napi_callback_info info) {
  FD_ARGS(env, info, 1);
  return errno_result(env, close(fd));
}

napi_value netlink_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"nlOpen", NULL, nl_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"nlSetRecvBuffer", NULL, nl_set_recv_buffer, NULL, NULL, NULL, napi_enumerable, NULL},
      {"nlAddMembership", NULL, nl_add_membership, NULL, NULL, NULL, napi_enumerable, NULL},
      {"nlSend", NULL, nl_send, NULL, NULL, NULL, napi_enumerable, NULL},
      {"nlRecv", NULL, nl_recv, NULL, NULL, NULL, napi_enumerable, NULL},
      {"closeFd", NULL, close_fd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"nlPoll", NULL, nl_poll, NULL, NULL, NULL, napi_enumerable, NULL},
      {"nlPollStart", NULL, nl_poll_start, NULL, NULL, NULL, napi_enumerable, NULL},
      {"nlPollStop", NULL, nl_poll_stop, NULL, NULL, NULL, napi_enumerable, NULL},
      {"nlPollRef", NULL, nl_poll_ref, NULL, NULL, NULL, napi_enumerable, NULL},
      {"nlPollClose", NULL, nl_poll_close, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  NAPI_CALL(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}
