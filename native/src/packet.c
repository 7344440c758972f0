// A packet socket that sees DNS answers crossing this host's interfaces (collector/dns/).
//
// AF_PACKET, SOCK_DGRAM, ETH_P_ALL, bound to no interface: every interface of the network namespace,
// both directions, with the link-layer header already removed (cooked), so Ethernet, loopback,
// tunnels and veths look the same: the data starts at the IP header and the packet's ethertype comes
// with it. A classic BPF filter in the kernel keeps only what is worth a wake-up: IPv4 (first
// fragment) or IPv6 (no extension headers) carrying UDP or TCP from source port 53. VLAN-tagged
// frames that the device did not untag (ethertype 0x8100) are not seen.
//
// Like netlink.c: every system call reports failure as a value (a negative errno), the caller owns
// the buffer, nothing blocks (the poll handles of netlink.c say when to read).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "napi_util.h"

// Accepted packets are captured up to this length (the largest DNS message over UDP is 65,535
// bytes; answers beyond a few KB are rare and are counted as cut short by the parser).
#define SNAP_LEN 65535

static struct sock_filter dns_filter[] = {
    /* 0 */ BPF_STMT(BPF_LD | BPF_H | BPF_ABS, SKF_AD_OFF + SKF_AD_PROTOCOL),
    /* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, 0, 8),
    /* 2 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 9),  // IPv4 protocol
    /* 3 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_UDP, 1, 0),
    /* 4 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 0, 12),
    /* 5 */ BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 6),  // flags + fragment offset
    /* 6 */ BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x1fff, 10, 0),
    /* 7 */ BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 0),  // X = IPv4 header length
    /* 8 */ BPF_STMT(BPF_LD | BPF_H | BPF_IND, 0),   // source port
    /* 9 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 53, 6, 7),
    /* 10 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IPV6, 0, 6),
    /* 11 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 6),  // IPv6 next header
    /* 12 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_UDP, 1, 0),
    /* 13 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 0, 3),
    /* 14 */ BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 40),  // source port
    /* 15 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 53, 0, 1),
    /* 16 */ BPF_STMT(BPF_RET | BPF_K, SNAP_LEN),
    /* 17 */ BPF_STMT(BPF_RET | BPF_K, 0),
};

// --- pkOpen(): fd | -errno -------------------------------------------------------------------------
// Opened with protocol 0 (receives nothing), the filter attached, then bound to ETH_P_ALL: no packet
// reaches the socket before the filter does. Needs CAP_NET_RAW: EPERM without.

static napi_value pk_open(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_int(env, -errno);
  struct sock_fprog prog = {.len = sizeof dns_filter / sizeof dns_filter[0], .filter = dns_filter};
  struct sockaddr_ll addr;
  memset(&addr, 0, sizeof addr);
  addr.sll_family = AF_PACKET;
  addr.sll_protocol = htons(ETH_P_ALL);
  addr.sll_ifindex = 0;  // every interface
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0 ||
      bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    int err = errno;
    close(fd);
    return make_int(env, -err);
  }
  return make_int(env, fd);
}

// --- pkRecv(fd, buf, offset, info): end --------------------------------------------------------------
// Appends waiting packets to buf from `offset` as records, each aligned to 4 (numbers little-endian):
//   u32 original length, u16 captured length, u16 ethertype (0x0800, 0x86dd), u8 packet type
//   (PACKET_HOST, PACKET_OUTGOING, …), 3 bytes zero, then the captured bytes (from the IP header).
// Stops when nothing waits (EAGAIN) or less than a record header + SNAP_LEN is free. `info`
// (Int32Array of 4): [0] packets appended, [1] packets cut short (captured < original),
// [2] unused, [3] the errno that stopped the loop (0: none).

#define PK_HEADER 12

static napi_value pk_recv(napi_env env, napi_callback_info info) {
  FD_ARGS(env, info, 4);
  uint32_t offset = 0;
  void *data = NULL;
  size_t len = 0;
  if (!get_buffer(env, argv[1], &data, &len)) return NULL;
  NAPI_CALL(env, napi_get_value_uint32(env, argv[2], &offset));
  int32_t *out = get_recv_info(env, argv[3]);
  if (out == NULL) return NULL;
  uint8_t *buf = data;
  size_t off = align4_within(offset, len);
  while (len - off >= PK_HEADER + SNAP_LEN) {
    struct sockaddr_ll from;
    socklen_t fromlen = sizeof from;
    ssize_t n = recvfrom(fd, buf + off + PK_HEADER, SNAP_LEN, MSG_DONTWAIT | MSG_TRUNC,
                         (struct sockaddr *)&from, &fromlen);
    if (n < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err != EAGAIN && err != EWOULDBLOCK) out[3] = err;
      break;
    }
    uint32_t orig = (uint32_t)n;
    uint16_t cap = n > SNAP_LEN ? SNAP_LEN : (uint16_t)n;
    if (cap < orig) out[1]++;
    uint16_t proto = ntohs(from.sll_protocol);
    uint8_t *h = buf + off;  // little-endian, whatever the host's order
    h[0] = orig & 0xff, h[1] = (orig >> 8) & 0xff, h[2] = (orig >> 16) & 0xff, h[3] = orig >> 24;
    h[4] = cap & 0xff, h[5] = cap >> 8;
    h[6] = proto & 0xff, h[7] = proto >> 8;
    buf[off + 8] = from.sll_pkttype;
    buf[off + 9] = buf[off + 10] = buf[off + 11] = 0;
    off = align4_within(off + PK_HEADER + cap, len);
    out[0]++;
  }
  return make_int(env, (int64_t)off);
}

napi_value packet_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"pkOpen", NULL, pk_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pkRecv", NULL, pk_recv, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  NAPI_CALL(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}
