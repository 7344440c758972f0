// Read-only access to pinned BPF maps, for podflow's Cilium conntrack source.
//
// Deliberately thin: open a pinned map read-only, describe it, and copy every entry into Buffers the
// caller owns. Parsing, validation and policy live in TypeScript (native/index.ts,
// collector/cilium/). Nothing here can create, change or delete a map.
//
// Every bpf() call and every napi_* status is checked; a failure becomes a thrown Error carrying
// `code` (e.g. "EACCES"), `errno` and `syscall`.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "napi_util.h"

static long sys_bpf(int cmd, union bpf_attr *attr) {
  return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

// --- openPinned(path): fd -------------------------------------------------------------------------

static napi_value open_pinned(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  char path[4096];
  size_t len = 0;
  NAPI_CALL(env, napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len));
  if (len == 0 || len >= sizeof path - 1) {
    napi_throw_range_error(env, "ERR_INVALID_ARG", "podflow_bpf: bad path length");
    return NULL;
  }
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.pathname = (uint64_t)(uintptr_t)path;
  // Read-only: podflow never writes to Cilium's maps, and the kernel enforces it on this fd.
  attr.file_flags = BPF_F_RDONLY;
  long fd = sys_bpf(BPF_OBJ_GET, &attr);
  if (fd < 0) {
    char what[4200];
    snprintf(what, sizeof what, "bpf(BPF_OBJ_GET) %s", path);
    return throw_errno(env, errno, "bpf(BPF_OBJ_GET)", what);
  }
  napi_value result;
  if (napi_create_int32(env, (int32_t)fd, &result) != napi_ok) {
    close((int)fd);
    throw_napi_failure(env, napi_generic_failure, "napi_create_int32");
    return NULL;
  }
  return result;
}

// --- mapInfo(fd): { type, id, keySize, valueSize, maxEntries, flags, name } -----------------------

static napi_value map_info(napi_env env, napi_callback_info info) {
  FD_ARGS(env, info, 1);
  struct bpf_map_info mi;
  memset(&mi, 0, sizeof mi);
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.info.bpf_fd = (uint32_t)fd;
  attr.info.info_len = sizeof mi;
  attr.info.info = (uint64_t)(uintptr_t)&mi;
  if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) != 0) {
    return throw_errno(env, errno, "bpf(BPF_OBJ_GET_INFO_BY_FD)", "bpf(BPF_OBJ_GET_INFO_BY_FD)");
  }
  napi_value obj, name;
  NAPI_CALL(env, napi_create_object(env, &obj));
  if (!set_u32(env, obj, "type", mi.type)) return NULL;
  if (!set_u32(env, obj, "id", mi.id)) return NULL;
  if (!set_u32(env, obj, "keySize", mi.key_size)) return NULL;
  if (!set_u32(env, obj, "valueSize", mi.value_size)) return NULL;
  if (!set_u32(env, obj, "maxEntries", mi.max_entries)) return NULL;
  if (!set_u32(env, obj, "flags", mi.map_flags)) return NULL;
  NAPI_CALL(env, napi_create_string_latin1(env, mi.name, strnlen(mi.name, sizeof mi.name), &name));
  NAPI_CALL(env, napi_set_named_property(env, obj, "name", name));
  return obj;
}

// --- readChunk(fd, keySize, valueSize, keys, values, cursor, each): count ---------------------------
// Copies the next entries into keys/values (packed, keySize/valueSize apart), at most as many as
// fit, and returns how many. `cursor` (CURSOR_SIZE bytes, zeroed to start) carries the position
// between calls: byte 0 is the state (0 start, 1 reading, 2 done), the rest the kernel's batch token
// or the last key. Reading in chunks keeps memory small whatever the map size.
//
// each == false: BPF_MAP_LOOKUP_BATCH. Throws EINVAL/ENOTSUPP/... where the kernel or map type lacks
// it: the caller then starts over with each == true, the GET_NEXT_KEY + LOOKUP_ELEM walk.

#define CURSOR_SIZE 72u
#define CURSOR_DATA 8u
enum { CURSOR_START = 0, CURSOR_READING = 1, CURSOR_DONE = 2 };

static napi_value read_chunk(napi_env env, napi_callback_info info) {
  FD_ARGS(env, info, 7);
  uint32_t key_size = 0, value_size = 0;
  void *keys = NULL, *values = NULL, *cursor_data = NULL;
  size_t keys_len = 0, values_len = 0, cursor_len = 0;
  bool each = false;
  NAPI_CALL(env, napi_get_value_uint32(env, argv[1], &key_size));
  NAPI_CALL(env, napi_get_value_uint32(env, argv[2], &value_size));
  if (!get_buffer(env, argv[3], &keys, &keys_len)) return NULL;
  if (!get_buffer(env, argv[4], &values, &values_len)) return NULL;
  if (!get_buffer(env, argv[5], &cursor_data, &cursor_len)) return NULL;
  NAPI_CALL(env, napi_get_value_bool(env, argv[6], &each));
  if (key_size == 0 || value_size == 0 || key_size > CURSOR_SIZE - CURSOR_DATA || cursor_len < CURSOR_SIZE) {
    napi_throw_range_error(env, "ERR_INVALID_ARG", "podflow_bpf: bad key size, value size or cursor");
    return NULL;
  }
  uint8_t *cursor = cursor_data;
  size_t capacity = keys_len / key_size;
  if (values_len / value_size < capacity) capacity = values_len / value_size;
  size_t total = 0;

  if (cursor[0] == CURSOR_DONE || capacity == 0) goto out;

  if (!each) {
    // The batch token is opaque (a bucket index for hash maps): in_batch is the previous call's
    // out_batch, so read into a scratch copy and store it back.
    uint8_t next[CURSOR_SIZE - CURSOR_DATA];
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.batch.in_batch = cursor[0] == CURSOR_READING ? (uint64_t)(uintptr_t)(cursor + CURSOR_DATA) : 0;
    attr.batch.out_batch = (uint64_t)(uintptr_t)next;
    attr.batch.keys = (uint64_t)(uintptr_t)keys;
    attr.batch.values = (uint64_t)(uintptr_t)values;
    attr.batch.count = (uint32_t)(capacity > 0xffffffffu ? 0xffffffffu : capacity);
    attr.batch.map_fd = (uint32_t)fd;
    if (sys_bpf(BPF_MAP_LOOKUP_BATCH, &attr) != 0) {
      int err = errno;
      // ENOENT: no more entries; `count` still tells how many this last call copied.
      if (err != ENOENT) {
        if (err == ENOSPC) {
          return throw_errno(env, err, "bpf(BPF_MAP_LOOKUP_BATCH)",
                             "bpf(BPF_MAP_LOOKUP_BATCH): one hash bucket holds more entries than the read buffer");
        }
        return throw_errno(env, err, "bpf(BPF_MAP_LOOKUP_BATCH)", "bpf(BPF_MAP_LOOKUP_BATCH)");
      }
      cursor[0] = CURSOR_DONE;
    } else {
      memcpy(cursor + CURSOR_DATA, next, key_size);
      cursor[0] = CURSOR_READING;
    }
    total = attr.batch.count;
    goto out;
  }

  while (total < capacity) {
    uint8_t *key = (uint8_t *)keys + total * key_size;
    uint8_t *value = (uint8_t *)values + total * value_size;
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_fd = (uint32_t)fd;
    attr.key = cursor[0] == CURSOR_READING ? (uint64_t)(uintptr_t)(cursor + CURSOR_DATA) : 0;
    attr.next_key = (uint64_t)(uintptr_t)key;
    if (sys_bpf(BPF_MAP_GET_NEXT_KEY, &attr) != 0) {
      if (errno == ENOENT) {  // past the last key
        cursor[0] = CURSOR_DONE;
        break;
      }
      return throw_errno(env, errno, "bpf(BPF_MAP_GET_NEXT_KEY)", "bpf(BPF_MAP_GET_NEXT_KEY)");
    }
    memcpy(cursor + CURSOR_DATA, key, key_size);
    cursor[0] = CURSOR_READING;
    memset(&attr, 0, sizeof attr);
    attr.map_fd = (uint32_t)fd;
    attr.key = (uint64_t)(uintptr_t)key;
    attr.value = (uint64_t)(uintptr_t)value;
    if (sys_bpf(BPF_MAP_LOOKUP_ELEM, &attr) != 0) {
      // Deleted between the two calls: skip it. (GET_NEXT_KEY from a key deleted meanwhile restarts
      // at the first key of a hash map; the caller bounds a read by the map's size.)
      if (errno == ENOENT) continue;
      return throw_errno(env, errno, "bpf(BPF_MAP_LOOKUP_ELEM)", "bpf(BPF_MAP_LOOKUP_ELEM)");
    }
    total++;
  }

out:;
  napi_value result;
  NAPI_CALL(env, napi_create_double(env, (double)total, &result));
  return result;
}

// --- module ---------------------------------------------------------------------------------------

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"openPinned", NULL, open_pinned, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mapInfo", NULL, map_info, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readChunk", NULL, read_chunk, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  NAPI_CALL(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  if (netlink_register(env, exports) == NULL) return NULL;
  return packet_register(env, exports);
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
