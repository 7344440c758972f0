// Benchmark floor: the least a process can do to read the conntrack table over ctnetlink. One dump
// request, then blocking recv() into one 32 KiB buffer, walking only the netlink headers (counting
// messages until DONE), no attribute parsed. Compiled on demand by test/bench/conntrack.bench.ts;
// never part of the addon.
//
//   ct-floor <runs>   prints one JSON line per run: {"wallMs":…,"cpuMs":…,"entries":…}
#define _GNU_SOURCE
#include <errno.h>
#include <linux/netlink.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IPCTNL_MSG_CT_GET ((1 << 8) | 1)

static double now_ms(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void die(const char *what) {
  fprintf(stderr, "ct-floor: %s: %s\n", what, strerror(errno));
  exit(1);
}

static long dump_once(void) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) die("socket");
  struct sockaddr_nl addr = {.nl_family = AF_NETLINK};
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) die("bind");
  int rcvbuf = 1 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  struct {
    struct nlmsghdr h;
    uint8_t nfgen[4];
  } req;
  memset(&req, 0, sizeof req);
  req.h.nlmsg_len = sizeof req;
  req.h.nlmsg_type = IPCTNL_MSG_CT_GET;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.h.nlmsg_seq = 1;
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  if (sendto(fd, &req, sizeof req, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) die("sendto");
  static uint8_t buf[32768] __attribute__((aligned(8)));
  long entries = 0;
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("recv");
    }
    for (size_t off = 0; off + sizeof(struct nlmsghdr) <= (size_t)n;) {
      const struct nlmsghdr *h = (const struct nlmsghdr *)(buf + off);
      if (h->nlmsg_len < sizeof(struct nlmsghdr)) break;
      if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
        close(fd);
        return entries;
      }
      entries++;
      off += NLMSG_ALIGN(h->nlmsg_len);
    }
  }
}

int main(int argc, char **argv) {
  int runs = argc > 1 ? atoi(argv[1]) : 1;
  for (int i = 0; i < runs; i++) {
    double w0 = now_ms(CLOCK_MONOTONIC), c0 = now_ms(CLOCK_PROCESS_CPUTIME_ID);
    long entries = dump_once();
    double w = now_ms(CLOCK_MONOTONIC) - w0, c = now_ms(CLOCK_PROCESS_CPUTIME_ID) - c0;
    printf("{\"wallMs\":%.3f,\"cpuMs\":%.3f,\"entries\":%ld}\n", w, c, entries);
    fflush(stdout);
  }
  return 0;
}
