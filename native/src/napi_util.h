// Helpers shared by the addon's C files: one macro checks every napi_* status, errors carry
// `code` (errno name), `errno` and `syscall`.
#ifndef PODFLOW_NAPI_UTIL_H
#define PODFLOW_NAPI_UTIL_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <node_api.h>

#ifndef ENOTSUPP
// Kernel-internal "operation not supported" (not in the uapi errno list); bpf() may return it.
#define ENOTSUPP 524
#endif

// Checks a napi_* call; on failure throws (unless an exception is already pending) and returns NULL
// from the calling N-API callback.
#define NAPI_CALL(env, call)                                                                 \
  do {                                                                                       \
    napi_status status_ = (call);                                                            \
    if (status_ != napi_ok) {                                                                \
      throw_napi_failure((env), status_, #call);                                             \
      return NULL;                                                                           \
    }                                                                                        \
  } while (0)

static inline void throw_napi_failure(napi_env env, napi_status status, const char *call) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) return;
  const napi_extended_error_info *info = NULL;
  napi_get_last_error_info(env, &info);
  char msg[256];
  snprintf(msg, sizeof msg, "podflow native: %s failed: %s (status %d)", call,
           info && info->error_message ? info->error_message : "unknown N-API error", (int)status);
  napi_throw_error(env, "ERR_NAPI", msg);
}

static inline const char *errno_code(int err) {
  switch (err) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EBADF: return "EBADF";
    case EBADFD: return "EBADFD";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EINVAL: return "EINVAL";
    case ENOSPC: return "ENOSPC";
    case ENOSYS: return "ENOSYS";
    case ENOTDIR: return "ENOTDIR";
    case E2BIG: return "E2BIG";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ENOTSUPP: return "ENOTSUPP";
    default: return "EUNKNOWN";
  }
}

// Throws Error("<what>: <strerror>") with code/errno/syscall set. Returns NULL for tail calls.
// Not inlined: its message buffer would then be sized against every caller's `what`.
__attribute__((noinline, unused)) static napi_value throw_errno(napi_env env, int err, const char *syscall_name, const char *what) {
  char msg[512];
  const char *text = err == ENOTSUPP ? "Operation not supported" : strerror(err);
  snprintf(msg, sizeof msg, "%s: %s", what, text);
  napi_value code, message, error, errno_value, syscall_value;
  // On failure here there is nothing better to do than a plain throw.
  if (napi_create_string_utf8(env, errno_code(err), NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message) != napi_ok ||
      napi_create_error(env, code, message, &error) != napi_ok ||
      napi_create_int32(env, err, &errno_value) != napi_ok ||
      napi_create_string_utf8(env, syscall_name, NAPI_AUTO_LENGTH, &syscall_value) != napi_ok ||
      napi_set_named_property(env, error, "errno", errno_value) != napi_ok ||
      napi_set_named_property(env, error, "syscall", syscall_value) != napi_ok) {
    napi_throw_error(env, errno_code(err), msg);
    return NULL;
  }
  napi_throw(env, error);
  return NULL;
}

// --- argument helpers (TypeScript validates types; these only guard against misuse) ---------------

static inline napi_value get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < want) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "podflow native: missing arguments");
    return NULL;
  }
  napi_value ok;
  NAPI_CALL(env, napi_get_boolean(env, true, &ok));
  return ok;
}

// Like get_args, and the first argument as a file descriptor (every call on a socket or map starts
// so). Non-NULL on success.
static inline napi_value get_fd_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv,
                                     int32_t *fd) {
  if (!get_args(env, info, want, argv)) return NULL;
  NAPI_CALL(env, napi_get_value_int32(env, argv[0], fd));
  return argv[0];
}

// The start of every call on an fd: declares `argv` (`n` arguments) and `fd` (the first), and
// returns NULL from the callback when they are missing or `fd` is not a number.
#define FD_ARGS(env, info, n)                                                                \
  napi_value argv[n];                                                                        \
  int32_t fd = -1;                                                                           \
  if (!get_fd_args((env), (info), (n), argv, &fd)) return NULL

static inline napi_value get_buffer(napi_env env, napi_value value, void **data, size_t *len) {
  bool is_buffer = false;
  NAPI_CALL(env, napi_is_buffer(env, value, &is_buffer));
  if (!is_buffer) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "podflow native: expected a Buffer");
    return NULL;
  }
  NAPI_CALL(env, napi_get_buffer_info(env, value, data, len));
  napi_value ok;
  NAPI_CALL(env, napi_get_boolean(env, true, &ok));
  return ok;
}

// The Int32Array(4) a receive loop reports its counters into (netlink.c nl_recv, packet.c pk_recv),
// zeroed. NULL (an exception pending) when `value` is something else.
static inline int32_t *get_recv_info(napi_env env, napi_value value) {
  bool is_typedarray = false;
  napi_typedarray_type type = napi_int8_array;
  size_t n = 0;
  void *data = NULL;
  NAPI_CALL(env, napi_is_typedarray(env, value, &is_typedarray));
  if (is_typedarray) NAPI_CALL(env, napi_get_typedarray_info(env, value, &type, &n, &data, NULL, NULL));
  if (!is_typedarray || type != napi_int32_array || n < 4) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "podflow native: recv info must be an Int32Array(4)");
    return NULL;
  }
  int32_t *out = data;
  out[0] = out[1] = out[2] = out[3] = 0;
  return out;
}

// Receive loops append records to a caller's buffer at offsets aligned to 4 (where netlink messages
// align, and where the TypeScript readers expect records), never past its end `len`.
static inline size_t align4_within(size_t off, size_t len) {
  off = (off + 3) & ~(size_t)3;
  return off > len ? len : off;
}

static inline napi_value set_u32(napi_env env, napi_value obj, const char *name, uint32_t v) {
  napi_value value;
  NAPI_CALL(env, napi_create_uint32(env, v, &value));
  NAPI_CALL(env, napi_set_named_property(env, obj, name, value));
  return obj;
}

static inline napi_value make_int(napi_env env, int64_t v) {
  napi_value result;
  NAPI_CALL(env, napi_create_int64(env, v, &result));
  return result;
}

// The result of a system call that returns 0 or -1 (errno set), as 0 or -errno.
static inline napi_value errno_result(napi_env env, int rc) {
  return make_int(env, rc != 0 ? -errno : 0);
}

/** Registers the netlink functions (netlink.c) on the module's exports. */
napi_value netlink_register(napi_env env, napi_value exports);
napi_value packet_register(napi_env env, napi_value exports);

#endif
