// Test-only tool: creates, pins and fills real BPF maps so tests can exercise podflow's read-only
// reader against kernel maps. Compiled on demand by test/helpers/bpf.ts; never part of the addon.
//
//   bpf-tool create <pin> <type> <key_size> <value_size> <max_entries>
//   bpf-tool update <pin> <key_size> <value_size>   < records (key bytes then value bytes, repeated)
//   bpf-tool delete <pin> <key_size>                 < keys
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static long sys_bpf(int cmd, union bpf_attr *attr) { return syscall(__NR_bpf, cmd, attr, sizeof(*attr)); }

static void die(const char *what) {
  fprintf(stderr, "bpf-tool: %s: %s\n", what, strerror(errno));
  exit(1);
}

static int open_pin(const char *path) {
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.pathname = (uint64_t)(uintptr_t)path;
  int fd = (int)sys_bpf(BPF_OBJ_GET, &attr);
  if (fd < 0) die("BPF_OBJ_GET");
  return fd;
}

static size_t read_full(uint8_t *buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(0, buf + got, len - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("read stdin");
    }
    if (n == 0) break;
    got += (size_t)n;
  }
  return got;
}

int main(int argc, char **argv) {
  if (argc >= 7 && strcmp(argv[1], "create") == 0) {
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_type = (uint32_t)atoi(argv[3]);
    attr.key_size = (uint32_t)atoi(argv[4]);
    attr.value_size = (uint32_t)atoi(argv[5]);
    attr.max_entries = (uint32_t)atoi(argv[6]);
    const char *base = strrchr(argv[2], '/');
    strncpy(attr.map_name, base ? base + 1 : argv[2], sizeof attr.map_name - 1);
    int fd = (int)sys_bpf(BPF_MAP_CREATE, &attr);
    if (fd < 0) die("BPF_MAP_CREATE");
    memset(&attr, 0, sizeof attr);
    attr.pathname = (uint64_t)(uintptr_t)argv[2];
    attr.bpf_fd = (uint32_t)fd;
    if (sys_bpf(BPF_OBJ_PIN, &attr) != 0) die("BPF_OBJ_PIN");
    return 0;
  }
  if (argc >= 5 && strcmp(argv[1], "update") == 0) {
    int fd = open_pin(argv[2]);
    size_t ks = (size_t)atoi(argv[3]), vs = (size_t)atoi(argv[4]);
    uint8_t rec[512];
    if (ks + vs > sizeof rec) return 2;
    size_t n;
    while ((n = read_full(rec, ks + vs)) == ks + vs) {
      union bpf_attr attr;
      memset(&attr, 0, sizeof attr);
      attr.map_fd = (uint32_t)fd;
      attr.key = (uint64_t)(uintptr_t)rec;
      attr.value = (uint64_t)(uintptr_t)(rec + ks);
      attr.flags = BPF_ANY;
      if (sys_bpf(BPF_MAP_UPDATE_ELEM, &attr) != 0) die("BPF_MAP_UPDATE_ELEM");
    }
    if (n != 0) {
      fprintf(stderr, "bpf-tool: truncated record on stdin\n");
      return 1;
    }
    return 0;
  }
  if (argc >= 4 && strcmp(argv[1], "delete") == 0) {
    int fd = open_pin(argv[2]);
    size_t ks = (size_t)atoi(argv[3]);
    uint8_t key[256];
    if (ks > sizeof key) return 2;
    while (read_full(key, ks) == ks) {
      union bpf_attr attr;
      memset(&attr, 0, sizeof attr);
      attr.map_fd = (uint32_t)fd;
      attr.key = (uint64_t)(uintptr_t)key;
      if (sys_bpf(BPF_MAP_DELETE_ELEM, &attr) != 0 && errno != ENOENT) die("BPF_MAP_DELETE_ELEM");
    }
    return 0;
  }
  fprintf(stderr, "usage: bpf-tool create|update|delete ...\n");
  return 2;
}
