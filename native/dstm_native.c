// dstm_native: the DTI's device I/O, kept as small as possible (all packet logic is in src/dti/packet.ts).
//
// - TUN devices (IFF_TUN | IFF_NO_PI, non-blocking) and the interface MTU ioctl; with offloads, IFF_VNET_HDR and
//   TUNSETOFFLOAD (checksum, TSO, USO where the kernel has it): every read and write then starts with a 10-byte
//   struct virtio_net_hdr and reads may be 64 KiB super-packets (segmented and coalesced in src/dti/offload.ts).
// - Raw IPv6 sockets: protocol 4 (IPv4-in-IPv6, sent with IPV6_HDRINCL because the outer header, fragment
//   headers included, is built in JS) and protocol 58 (to hear ICMPv6 errors about our tunnel packets).
// - A libuv poll watcher per fd: when readable, up to maxBatch packets are drained into ONE shared buffer made
//   of fixed-size slots (io_uring reads or a read() loop for TUN, recvmmsg for raw sockets) and JavaScript is
//   called once with the count. For raw sockets the kernel strips the IPv6 header (and any destination
//   options), so a synthetic 40-byte IPv6 header (source, destination from IPV6_PKTINFO, traffic class, hop
//   limit, next header) is written in front of each payload: JS then decapsulates every packet the same way.
// - Batched writes: sendmmsg for raw sockets, the destination of each packet taken from its own IPv6 header; for
//   TUN (one packet per read or write is its contract) the batch is one io_uring submission where the kernel has
//   io_uring (uring.h: the system call around each packet costs more than the kernel's work on a small one), else
//   a write() loop. One JS→C crossing per batch.
// Nothing is allocated per packet: the mmsghdr/iovec/sockaddr/cmsg arrays are allocated once per watcher/fd.
#define _GNU_SOURCE
#include <node_api.h>
#include "napi_util.h"
#include "uring.h"
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/filter.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define KIND_TUN 0
#define KIND_RAW 1
#define KIND_TUN_VNET 2  // a TUN fd with IFF_VNET_HDR: reads land VNET_HDR bytes before the headroom
#define IPV6_HDR 40
#define VNET_HDR 10
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20  // Linux 6.2
#define TUN_F_USO6 0x40
#endif
#define MAX_BATCH 1024


static int get_name(napi_env env, napi_value v, char *buf, size_t size) {
  size_t n;
  if (napi_get_value_string_utf8(env, v, buf, size, &n) != napi_ok) {
    napi_throw_type_error(env, NULL, "dstm_native: expected a string");
    return 0;
  }
  return 1;
}

static int tun_attach(const char *name, int flags, struct ifreq *ifr) {
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return -1;
  memset(ifr, 0, sizeof *ifr);
  ifr->ifr_flags = flags;
  memcpy(ifr->ifr_name, name, IFNAMSIZ);  // get_name NUL-terminated it within IFNAMSIZ
  if (ioctl(fd, TUNSETIFF, ifr) < 0) {
    int err = errno;
    close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

/** Whether the device behind `fd` carries virtio-net headers (IFF_VNET_HDR), as the kernel has it; -1 on error. */
static int tun_vnet(int fd) {
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (ioctl(fd, TUNGETIFF, &ifr) < 0) return -1;
  return (ifr.ifr_flags & IFF_VNET_HDR) != 0;
}

/**
 * Turns offloads on: the header size, then the widest flag set the kernel accepts. Returns the flags, or 0. Only on
 * a device that carries virtio-net headers: a further queue of a multi-queue device keeps the device's flags
 * whatever it asked, and TUNSETOFFLOAD on a plain one would have the kernel hand super-packets to its other queues.
 */
static unsigned tun_offload(int fd) {
  if (tun_vnet(fd) != 1) return 0;
  int hdr = VNET_HDR;
  if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) return 0;
  static const unsigned tries[] = {
      TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6,
      TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN,
  };
  for (unsigned i = 0; i < sizeof tries / sizeof tries[0]; i++)
    if (ioctl(fd, TUNSETOFFLOAD, tries[i]) == 0) return tries[i];
  return 0;
}

// openTun(name: string, offload: boolean, multiQueue: boolean) → [fd, actualName, offloadFlags]. An empty name
// lets the kernel pick tunN. With offload, the device is made with IFF_VNET_HDR and the TUN_F_* flags the kernel
// accepts are returned; when it accepts none, the device is made again without IFF_VNET_HDR and the flags are 0.
// With multiQueue (IFF_MULTI_QUEUE), opening an existing device's name attaches one more queue (one more fd) to it;
// the kernel spreads the packets it routes into the device over the queues by flow. Such a queue takes the device's
// IFF_VNET_HDR as the first queue set it (the kernel ignores the flag on later attaches): when it differs from what
// the fd ends up with (asked otherwise, or offloads refused and the fallback attached plain to a device that is
// not), the fd is closed and openTun throws rather than read headers it does not expect or miss ones it does.
static napi_value open_tun(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!napi_util_args(env, info, 3, argv)) return NULL;
  char name[IFNAMSIZ];
  if (!get_name(env, argv[0], name, sizeof name)) return NULL;
  bool offload, multi;
  NAPI_CHECK(napi_get_value_bool(env, argv[1], &offload));
  NAPI_CHECK(napi_get_value_bool(env, argv[2], &multi));
  int base = IFF_TUN | IFF_NO_PI | (multi ? IFF_MULTI_QUEUE : 0);
  struct ifreq ifr;
  unsigned flags = 0;
  int fd = -1;
  if (offload) {
    fd = tun_attach(name, base | IFF_VNET_HDR, &ifr);
    if (fd >= 0 && (flags = tun_offload(fd)) == 0) {
      close(fd);  // the device goes with its only fd: made again below, plain
      fd = -1;
    }
  }
  if (fd < 0) fd = tun_attach(name, base, &ifr);
  if (fd < 0) return napi_util_throw_sys(env, "TUNSETIFF", errno, strerror(errno));
  int vnet = tun_vnet(fd);
  if (vnet != (flags != 0)) {
    int err = errno;
    close(fd);
    if (vnet < 0) return napi_util_throw_sys(env, "TUNGETIFF", err, strerror(err));
    char msg[256];
    snprintf(msg, sizeof msg,
             "TUN device %s has offloads (virtio-net headers) %s, as its first queue set them, but this queue "
             "has them %s; every queue must have the first one's",
             ifr.ifr_name, vnet ? "on" : "off", flags ? "on" : "off");
    napi_throw_error(env, "EOFFLOAD", msg);
    return NULL;
  }
  napi_value result, fdv, namev, flagsv;
  NAPI_CHECK(napi_create_array_with_length(env, 3, &result));
  NAPI_CHECK(napi_create_int32(env, fd, &fdv));
  NAPI_CHECK(napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &namev));
  NAPI_CHECK(napi_create_uint32(env, flags, &flagsv));
  NAPI_CHECK(napi_set_element(env, result, 0, fdv));
  NAPI_CHECK(napi_set_element(env, result, 1, namev));
  NAPI_CHECK(napi_set_element(env, result, 2, flagsv));
  return result;
}

// setMtu(ifname: string, mtu: number)
static napi_value set_mtu(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!napi_util_args(env, info, 2, argv)) return NULL;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  int32_t mtu;
  if (!get_name(env, argv[0], ifr.ifr_name, IFNAMSIZ) || !napi_util_i32(env, argv[1], &mtu)) return NULL;
  ifr.ifr_mtu = mtu;
  int s = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return napi_util_throw_sys(env, "socket", errno, strerror(errno));
  int rc = ioctl(s, SIOCSIFMTU, &ifr);
  int err = errno;
  close(s);
  if (rc < 0) return napi_util_throw_sys(env, "SIOCSIFMTU", err, strerror(err));
  return NULL;
}

// openRaw6(protocol: number, bindAddr: Uint8Array(16) | null, device: string, bufferBytes: number) → fd
// Protocol 4 sockets send with IPV6_HDRINCL; protocol 58 sockets only pass ICMPv6 error messages.
static napi_value open_raw6(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!napi_util_args(env, info, 4, argv)) return NULL;
  int32_t proto, bufsize;
  if (!napi_util_i32(env, argv[0], &proto) || !napi_util_i32(env, argv[3], &bufsize)) return NULL;
  if (bufsize < 4096) {
    napi_throw_range_error(env, NULL, "openRaw6: buffer size below 4096 bytes");
    return NULL;
  }
  char dev[IFNAMSIZ];
  if (!get_name(env, argv[2], dev, sizeof dev)) return NULL;
  napi_valuetype t;
  NAPI_CHECK(napi_typeof(env, argv[1], &t));
  uint8_t *addr = NULL;
  size_t alen = 0;
  if (t != napi_null && t != napi_undefined) {
    if (!napi_util_bytes(env, argv[1], (void **)&addr, &alen)) return NULL;
    if (alen != 16) {
      napi_throw_type_error(env, NULL, "openRaw6: bind address must be 16 bytes");
      return NULL;
    }
  }
  int fd = socket(AF_INET6, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
  if (fd < 0) return napi_util_throw_sys(env, "socket(AF_INET6, SOCK_RAW)", errno, strerror(errno));
  int one = 1;
  const char *what = NULL;
  // What arrives while the process is off the CPU waits here: the default (~200 KiB) overflows within a
  // millisecond at full rate. The FORCE variants need CAP_NET_ADMIN; without it the request is capped by
  // net.core.rmem_max/wmem_max, which only costs drops under load (counted as kernel_rx_overflow, queue_full).
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bufsize, sizeof bufsize) < 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof bufsize);
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bufsize, sizeof bufsize) < 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize);
  if (setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one) < 0) what = "IPV6_RECVPKTINFO";
  else if (setsockopt(fd, IPPROTO_IPV6, IPV6_RECVTCLASS, &one, sizeof one) < 0) what = "IPV6_RECVTCLASS";
  else if (setsockopt(fd, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, &one, sizeof one) < 0) what = "IPV6_RECVHOPLIMIT";
  else if (proto != IPPROTO_ICMPV6 && setsockopt(fd, IPPROTO_IPV6, IPV6_HDRINCL, &one, sizeof one) < 0)
    what = "IPV6_HDRINCL";
  if (!what && proto == IPPROTO_ICMPV6) {
    struct icmp6_filter filter;
    ICMP6_FILTER_SETBLOCKALL(&filter);
    ICMP6_FILTER_SETPASS(ICMP6_DST_UNREACH, &filter);
    ICMP6_FILTER_SETPASS(ICMP6_PACKET_TOO_BIG, &filter);
    ICMP6_FILTER_SETPASS(ICMP6_TIME_EXCEEDED, &filter);
    ICMP6_FILTER_SETPASS(ICMP6_PARAM_PROB, &filter);
    if (setsockopt(fd, IPPROTO_ICMPV6, ICMP6_FILTER, &filter, sizeof filter) < 0) what = "ICMP6_FILTER";
  }
  if (!what && dev[0] && setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, dev, strlen(dev)) < 0) what = "SO_BINDTODEVICE";
  if (!what && addr) {
    struct sockaddr_in6 sa;
    memset(&sa, 0, sizeof sa);
    sa.sin6_family = AF_INET6;
    memcpy(&sa.sin6_addr, addr, 16);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) what = "bind";
  }
  if (what) {
    int err = errno;
    close(fd);
    return napi_util_throw_sys(env, what, err, strerror(err));
  }
  napi_value r;
  NAPI_CHECK(napi_create_int32(env, fd, &r));
  return r;
}

// attachQueueFilter(fd, queue, count): a raw IPIP socket keeps only the tunnel packets of its queue. Every raw
// socket of a protocol gets its own copy of every packet, so with one socket per queue each runs this classic BPF
// program (on the payload: the inner IPv4 packet) and keeps a packet only if a hash of its inner addresses, and
// ports when it is an unfragmented TCP or UDP packet, is its queue number modulo count. Exactly one socket keeps
// each packet: one too short to hash goes to queue 0, whose pipeline counts it as malformed. The hash is mixed
// (a multiplication) so that every bit of the flow counts: Linux gives a client's connections even source ports,
// often in steps of two, which a plain XOR fold of a few bits sent all to one queue.
static napi_value attach_queue_filter(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!napi_util_args(env, info, 3, argv)) return NULL;
  int32_t fd, queue, count;
  if (!napi_util_i32(env, argv[0], &fd) || !napi_util_i32(env, argv[1], &queue) || !napi_util_i32(env, argv[2], &count))
    return NULL;
  if (count < 2 || queue < 0 || queue >= count) {
    napi_throw_range_error(env, NULL, "attachQueueFilter: queue out of range");
    return NULL;
  }
  const uint32_t keep = 0xffffffff;
  struct sock_filter code[] = {
      /*  0 */ BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0),
      /*  1 */ BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 20, 1, 0),
      /*  2 */ BPF_STMT(BPF_RET | BPF_K, queue == 0 ? keep : 0),
      /*  3 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 12),  // inner source
      /*  4 */ BPF_STMT(BPF_MISC | BPF_TAX, 0),
      /*  5 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 16),  // inner destination
      /*  6 */ BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
      /*  7 */ BPF_STMT(BPF_ST, 0),
      /*  8 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 9),  // protocol
      /*  9 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 1, 0),
      /* 10 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_UDP, 0, 13),  // → 24
      /* 11 */ BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 6),
      /* 12 */ BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x3fff, 11, 0),  // a fragment: no ports → 24
      /* 13 */ BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 0),  // X = header length
      /* 14 */ BPF_STMT(BPF_MISC | BPF_TXA, 0),
      /* 15 */ BPF_STMT(BPF_ALU | BPF_ADD | BPF_K, 4),
      /* 16 */ BPF_STMT(BPF_MISC | BPF_TAX, 0),
      /* 17 */ BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0),
      /* 18 */ BPF_JUMP(BPF_JMP | BPF_JGE | BPF_X, 0, 0, 5),  // ports beyond the packet → 24
      /* 19 */ BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 0),
      /* 20 */ BPF_STMT(BPF_LD | BPF_W | BPF_IND, 0),  // both ports
      /* 21 */ BPF_STMT(BPF_LDX | BPF_MEM, 0),
      /* 22 */ BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
      /* 23 */ BPF_STMT(BPF_ST, 0),
      /* 24 */ BPF_STMT(BPF_LD | BPF_MEM, 0),  // mix: fold the halves, multiply, keep the high half
      /* 25 */ BPF_STMT(BPF_MISC | BPF_TAX, 0),
      /* 26 */ BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 16),
      /* 27 */ BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0),
      /* 28 */ BPF_STMT(BPF_ALU | BPF_MUL | BPF_K, 0x9e3779b1),
      /* 29 */ BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 16),
      /* 30 */ BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, (uint32_t)count),
      /* 31 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)queue, 0, 1),
      /* 32 */ BPF_STMT(BPF_RET | BPF_K, keep),
      /* 33 */ BPF_STMT(BPF_RET | BPF_K, 0),
  };
  struct sock_fprog prog = {.len = sizeof code / sizeof code[0], .filter = code};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) < 0)
    return napi_util_throw_sys(env, "SO_ATTACH_FILTER", errno, strerror(errno));
  return NULL;
}

// closeFd(fd)
static napi_value close_fd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!napi_util_args(env, info, 1, argv)) return NULL;
  int32_t fd;
  if (!napi_util_i32(env, argv[0], &fd)) return NULL;
  if (close(fd) < 0) return napi_util_throw_sys(env, "close", errno, strerror(errno));
  return NULL;
}

// ---------------------------------------------------------------------------------------------------------------
// Batched reading

typedef struct {
  struct sockaddr_in6 from;
  union {
    char buf[CMSG_SPACE(sizeof(struct in6_pktinfo)) + 2 * CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } control;
} raw_slot;

typedef struct {
  js_poller jp;  // first: the uv handle's address is the reader's; keeps the slots and lengths alive
  int fd;
  int kind;
  int proto;
  uint8_t *slots;
  size_t slot_size;
  size_t headroom;
  uint32_t *lens;
  unsigned max_batch;
  struct mmsghdr *msgs;  // raw sockets only
  struct iovec *iovs;
  raw_slot *raw;
  uring ring;  // TUN with io_uring (fd -1: the read() loop)
  uint8_t **bufs;
  uint32_t *room;
  int32_t *res;
} reader;

/** Writes the synthetic IPv6 header for a received raw-socket payload of `len` bytes at slot + 40. */
static void raw_header(reader *r, unsigned i, uint8_t *slot, size_t len) {
  struct msghdr *m = &r->msgs[i].msg_hdr;
  int tclass = 0, hops = 64;
  const uint8_t *dst = NULL;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
    if (c->cmsg_level != IPPROTO_IPV6) continue;
    if (c->cmsg_type == IPV6_PKTINFO) dst = ((struct in6_pktinfo *)CMSG_DATA(c))->ipi6_addr.s6_addr;
    else if (c->cmsg_type == IPV6_TCLASS) memcpy(&tclass, CMSG_DATA(c), sizeof(int));
    else if (c->cmsg_type == IPV6_HOPLIMIT) memcpy(&hops, CMSG_DATA(c), sizeof(int));
  }
  slot[0] = 0x60 | ((tclass >> 4) & 0x0f);
  slot[1] = (tclass & 0x0f) << 4;
  slot[2] = slot[3] = 0;
  slot[4] = len >> 8;
  slot[5] = len & 0xff;
  slot[6] = r->proto;
  slot[7] = hops;
  memcpy(slot + 8, r->raw[i].from.sin6_addr.s6_addr, 16);
  if (dst) memcpy(slot + 24, dst, 16);
  else memset(slot + 24, 0, 16);
}

/** Where TUN read i goes: with IFF_VNET_HDR the header just before the headroom, so the packet is where JS expects. */
static uint8_t *tun_slot(reader *r, unsigned i) {
  return r->slots + (size_t)i * r->slot_size + r->headroom - (r->kind == KIND_TUN_VNET ? VNET_HDR : 0);
}

/** Reads TUN packets into slots n.. with read() until EAGAIN or max_batch; returns the new count. */
static unsigned drain_tun_loop(reader *r, unsigned n) {
  size_t pre = r->kind == KIND_TUN_VNET ? VNET_HDR : 0;
  while (n < r->max_batch) {
    ssize_t got = read(r->fd, tun_slot(r, n), r->slot_size - r->headroom + pre);
    if (got < 0) {
      if (errno == EINTR) continue;
      break;  // EAGAIN: drained (other errors surface on the next write or close)
    }
    r->lens[n++] = (size_t)got < pre ? 0 : (uint32_t)(got - pre);
  }
  return n;
}

/**
 * The same through io_uring: reads in submissions of 4, 8, 16, … (a device holding one packet costs one submission
 * of 4 reads, a full batch a handful) until one comes back short (EAGAIN). Packets stay in arrival order; one read
 * after a failed one (a packet that came in meanwhile) is moved down to close the gap.
 */
static unsigned drain_tun_uring(reader *r) {
  size_t pre = r->kind == KIND_TUN_VNET ? VNET_HDR : 0;
  unsigned n = 0;
  for (unsigned chunk = 4; n < r->max_batch; chunk *= 2) {
    unsigned k = r->max_batch - n < chunk ? r->max_batch - n : chunk;
    for (unsigned i = 0; i < k; i++) {
      r->bufs[i] = tun_slot(r, n + i);
      r->room[i] = r->slot_size - r->headroom + pre;
    }
    int rc = uring_batch(&r->ring, r->fd, 0, r->bufs, r->room, k, r->res);
    if (rc < 0) {
      uring_free(&r->ring);  // the ring failed before reading anything: the read() loop from now on
      return drain_tun_loop(r, n);
    }
    unsigned got = 0;
    int full = rc == (int)k;
    int refused = 0;
    for (unsigned i = 0; i < k; i++) {
      if (r->res[i] < 0) {
        full = 0;  // EAGAIN: drained
        // Anything else is the ring's, not the device's: before 6.4 TUN refuses RWF_NOWAIT (EOPNOTSUPP), which
        // would otherwise leave the device readable and never read.
        if (r->res[i] != -EAGAIN) refused = 1;
        continue;
      }
      if (got != i) memmove(tun_slot(r, n + got), tun_slot(r, n + i), (size_t)r->res[i]);
      r->lens[n + got++] = (size_t)r->res[i] < pre ? 0 : (uint32_t)(r->res[i] - pre);
    }
    n += got;
    if (refused) {
      uring_free(&r->ring);  // a refused read took no packet: the read() loop goes on from here
      return drain_tun_loop(r, n);
    }
    if (rc < (int)k) uring_free(&r->ring);  // failed midway (never seen): what it lost was not read
    if (!full) break;
  }
  return n;
}

/** Drains up to max_batch packets; returns how many (slot lengths in r->lens; 0 = truncated, left to JS to count). */
static unsigned drain(reader *r) {
  if (r->kind != KIND_RAW) return r->ring.fd >= 0 ? drain_tun_uring(r) : drain_tun_loop(r, 0);
  for (unsigned i = 0; i < r->max_batch; i++) {
    r->msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in6);
    r->msgs[i].msg_hdr.msg_controllen = sizeof r->raw[i].control.buf;
    r->msgs[i].msg_hdr.msg_flags = 0;
  }
  int got;
  do got = recvmmsg(r->fd, r->msgs, r->max_batch, MSG_DONTWAIT, NULL);
  while (got < 0 && errno == EINTR);
  if (got <= 0) return 0;
  for (int i = 0; i < got; i++) {
    uint8_t *slot = r->slots + i * r->slot_size;
    size_t len = r->msgs[i].msg_len;
    if (r->msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
      r->lens[i] = 0;
      continue;
    }
    raw_header(r, i, slot, len);
    r->lens[i] = (uint32_t)(IPV6_HDR + len);
  }
  return (unsigned)got;
}

/** Calls JavaScript with a packet count, or with −errno when polling failed (and was stopped). */
static void on_readable(uv_poll_t *handle, int status, int events) {
  reader *r = (reader *)handle;
  (void)events;
  if (status < 0) {
    // A persistent error would otherwise wake us in a loop; stop and let JavaScript decide (close, reopen).
    uv_poll_stop(handle);
    js_poller_call(&r->jp, status);
    return;
  }
  unsigned n = drain(r);
  if (n > 0) js_poller_call(&r->jp, n);
}

static void free_reader(uv_handle_t *handle) {
  reader *r = (reader *)handle;
  free(r->msgs);
  free(r->iovs);
  free(r->raw);
  uring_free(&r->ring);
  free(r->bufs);
  free(r->room);
  free(r->res);
  free(r);
}

// startReader(fd, kind, slots: Uint8Array, slotSize, headroom, lengths: Uint32Array, maxBatch, protocol, uring,
//   cb) → handle. cb(count) runs once per readable event; slot i holds lens[i] bytes at i*slotSize + headroom (TUN)
//   or a synthetic IPv6 header + payload at i*slotSize (raw). The slots are reused by the next event. With uring
//   (TUN only), reads go through io_uring where the kernel has it.
static napi_value start_reader(napi_env env, napi_callback_info info) {
  napi_value argv[10];
  if (!napi_util_args(env, info, 10, argv)) return NULL;
  int32_t fd, kind, slot_size, headroom, max_batch, proto;
  uint8_t *slots, *lens;
  size_t slots_len, lens_len;
  if (!napi_util_i32(env, argv[0], &fd) || !napi_util_i32(env, argv[1], &kind) || !napi_util_bytes(env, argv[2], (void **)&slots, &slots_len) ||
      !napi_util_i32(env, argv[3], &slot_size) || !napi_util_i32(env, argv[4], &headroom) ||
      !napi_util_bytes(env, argv[5], (void **)&lens, &lens_len) || !napi_util_i32(env, argv[6], &max_batch) ||
      !napi_util_i32(env, argv[7], &proto))
    return NULL;
  bool want_uring;
  NAPI_CHECK(napi_get_value_bool(env, argv[8], &want_uring));
  if (max_batch < 1 || max_batch > MAX_BATCH || slot_size <= headroom + IPV6_HDR || headroom < 0 ||
      (kind == KIND_TUN_VNET && headroom < VNET_HDR) ||
      (size_t)max_batch * slot_size > slots_len || (size_t)max_batch * 4 > lens_len) {
    napi_throw_range_error(env, NULL, "startReader: buffer geometry does not fit");
    return NULL;
  }
  reader *r = calloc(1, sizeof *r);
  if (!r) return napi_util_throw_sys(env, "calloc", ENOMEM, strerror(ENOMEM));
  r->fd = fd;
  r->kind = kind;
  r->proto = proto;
  r->slots = slots;
  r->slot_size = slot_size;
  r->headroom = headroom;
  r->lens = (uint32_t *)lens;
  r->max_batch = max_batch;
  r->ring.fd = -1;
  if (kind != KIND_RAW && want_uring) {
    r->bufs = calloc(max_batch, sizeof *r->bufs);
    r->room = calloc(max_batch, sizeof *r->room);
    r->res = calloc(max_batch, sizeof *r->res);
    if (!r->bufs || !r->room || !r->res) {
      free_reader((uv_handle_t *)r);
      return napi_util_throw_sys(env, "calloc", ENOMEM, strerror(ENOMEM));
    }
    uring_init(&r->ring, max_batch);  // on failure fd stays -1: the read() loop
  }
  if (kind == KIND_RAW) {
    r->msgs = calloc(max_batch, sizeof *r->msgs);
    r->iovs = calloc(max_batch, sizeof *r->iovs);
    r->raw = calloc(max_batch, sizeof *r->raw);
    if (!r->msgs || !r->iovs || !r->raw) {
      free_reader((uv_handle_t *)r);
      return napi_util_throw_sys(env, "calloc", ENOMEM, strerror(ENOMEM));
    }
    for (int i = 0; i < max_batch; i++) {
      r->iovs[i].iov_base = slots + (size_t)i * slot_size + IPV6_HDR;
      r->iovs[i].iov_len = slot_size - IPV6_HDR;
      r->msgs[i].msg_hdr.msg_iov = &r->iovs[i];
      r->msgs[i].msg_hdr.msg_iovlen = 1;
      r->msgs[i].msg_hdr.msg_name = &r->raw[i].from;
      r->msgs[i].msg_hdr.msg_control = r->raw[i].control.buf;
    }
  }
  napi_value arrays[] = {argv[2], argv[5]};
  if (!js_poller_start(env, &r->jp, fd, UV_READABLE, on_readable, free_reader, "dstm:device", argv[9], arrays, 2)) return NULL;
  napi_value ext;
  NAPI_CHECK(napi_create_external(env, r, NULL, NULL, &ext));
  return ext;
}

// stopReader(handle): stops watching; the fd stays open (closeFd closes it).
static napi_value stop_reader(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!napi_util_args(env, info, 1, argv)) return NULL;
  reader *r;
  NAPI_CHECK(napi_get_value_external(env, argv[0], (void **)&r));
  js_poller_stop(&r->jp, free_reader);
  return NULL;
}

// ---------------------------------------------------------------------------------------------------------------
// Batched writing

typedef struct {
  int fd;
  unsigned cap;
  struct mmsghdr *msgs;
  struct iovec *iovs;
  struct sockaddr_in6 *dsts;
  uring ring;  // TUN with io_uring (fd -1: the write() loop)
  uint8_t **bufs;
  int32_t *res;
} sender;

static void free_sender(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  sender *s = data;
  free(s->msgs);
  free(s->iovs);
  free(s->dsts);
  uring_free(&s->ring);
  free(s->bufs);
  free(s->res);
  free(s);
}

// newSender(maxBatch, uring) → [handle, usesUring]: the handle holds the preallocated sendmmsg arrays, and with
// uring (for a TUN device) an io_uring where the kernel has it (freed with the handle).
static napi_value new_sender(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!napi_util_args(env, info, 2, argv)) return NULL;
  int32_t cap;
  bool want_uring;
  if (!napi_util_i32(env, argv[0], &cap)) return NULL;
  NAPI_CHECK(napi_get_value_bool(env, argv[1], &want_uring));
  if (cap < 1 || cap > MAX_BATCH) {
    napi_throw_range_error(env, NULL, "newSender: batch size out of range");
    return NULL;
  }
  sender *s = calloc(1, sizeof *s);
  if (s) {
    s->cap = cap;
    s->msgs = calloc(cap, sizeof *s->msgs);
    s->iovs = calloc(cap, sizeof *s->iovs);
    s->dsts = calloc(cap, sizeof *s->dsts);
    s->bufs = calloc(cap, sizeof *s->bufs);
    s->res = calloc(cap, sizeof *s->res);
    s->ring.fd = -1;
  }
  if (!s || !s->msgs || !s->iovs || !s->dsts || !s->bufs || !s->res) {
    if (s) free_sender(env, s, NULL);
    return napi_util_throw_sys(env, "calloc", ENOMEM, strerror(ENOMEM));
  }
  if (want_uring) uring_init(&s->ring, cap);  // on failure fd stays -1: the write() loop
  napi_value result, ext, uses;
  NAPI_CHECK(napi_create_external(env, s, free_sender, NULL, &ext));
  NAPI_CHECK(napi_get_boolean(env, s->ring.fd >= 0, &uses));
  NAPI_CHECK(napi_create_array_with_length(env, 2, &result));
  NAPI_CHECK(napi_set_element(env, result, 0, ext));
  NAPI_CHECK(napi_set_element(env, result, 1, uses));
  return result;
}

/**
 * TUN writes of packets [i, count) through io_uring, in submissions of up to the sender's batch; returns where it
 * stopped: count, or the first packet not handed to the kernel when the ring failed (then dropped: the caller's
 * write() loop goes on from there). EAGAIN/ENOBUFS leave a packet unsent (the caller's count − sent − failed).
 */
static int send_tun_uring(sender *s, int fd, uint8_t *buf, const uint32_t *offs, const uint32_t *lens, int i,
                          int count, int *sent, int *failed, int *last) {
  while (i < count) {
    int n = count - i < (int)s->cap ? count - i : (int)s->cap;
    for (int k = 0; k < n; k++) s->bufs[k] = buf + offs[i + k];
    int rc = uring_batch(&s->ring, fd, 1, s->bufs, lens + i, (unsigned)n, s->res);
    if (rc < 0) {
      uring_free(&s->ring);
      return i;
    }
    for (int k = 0; k < n; k++) {
      int res = s->res[k];
      if (res >= 0) (*sent)++;
      else if (res == -EAGAIN || res == -ENOBUFS) *last = -res;
      else {
        (*failed)++;  // refused, or (-EIO) lost with a ring that failed midway
        *last = -res;
      }
    }
    i += n;
    if (rc < n) uring_free(&s->ring);
  }
  return i;
}

// sendBatch(sender, fd, kind, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count,
//           status: Int32Array(3)) → packets sent.
// status = [sent, failed, lastErrno]: a packet the kernel refuses (EMSGSIZE, ENETUNREACH, …) is skipped and
// counted as failed; on EAGAIN/ENOBUFS the rest of the batch is left unsent (count − sent − failed).
static napi_value send_batch(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  if (!napi_util_args(env, info, 8, argv)) return NULL;
  sender *s;
  int32_t fd, kind, count;
  uint8_t *buf, *offs8, *lens8, *status8;
  size_t buf_len, offs_len, lens_len, status_len;
  NAPI_CHECK(napi_get_value_external(env, argv[0], (void **)&s));
  if (!napi_util_i32(env, argv[1], &fd) || !napi_util_i32(env, argv[2], &kind) || !napi_util_bytes(env, argv[3], (void **)&buf, &buf_len) ||
      !napi_util_bytes(env, argv[4], (void **)&offs8, &offs_len) || !napi_util_bytes(env, argv[5], (void **)&lens8, &lens_len) ||
      !napi_util_i32(env, argv[6], &count) || !napi_util_bytes(env, argv[7], (void **)&status8, &status_len))
    return NULL;
  uint32_t *offs = (uint32_t *)offs8, *lens = (uint32_t *)lens8;
  int32_t *status = (int32_t *)status8;
  if (count < 0 || (size_t)count * 4 > offs_len || (size_t)count * 4 > lens_len || status_len < 12) {
    napi_throw_range_error(env, NULL, "sendBatch: count exceeds the offsets/lengths arrays");
    return NULL;
  }
  for (int i = 0; i < count; i++) {
    if ((size_t)offs[i] + lens[i] > buf_len || (kind == KIND_RAW && lens[i] < IPV6_HDR)) {
      napi_throw_range_error(env, NULL, "sendBatch: packet outside the buffer");
      return NULL;
    }
  }
  int sent = 0, failed = 0, last = 0;
  if (kind != KIND_RAW) {
    int i = s->ring.fd >= 0 ? send_tun_uring(s, fd, buf, offs, lens, 0, count, &sent, &failed, &last) : 0;
    for (; i < count; i++) {
      ssize_t rc = write(fd, buf + offs[i], lens[i]);
      if (rc >= 0) sent++;
      else if (errno == EINTR) i--;
      else if (errno == EAGAIN || errno == ENOBUFS) {
        last = errno;
        break;
      } else {
        failed++;
        last = errno;
      }
    }
  } else {
    int i = 0;
    while (i < count) {
      int n = count - i < (int)s->cap ? count - i : (int)s->cap;
      for (int k = 0; k < n; k++) {
        uint8_t *pkt = buf + offs[i + k];
        s->dsts[k].sin6_family = AF_INET6;
        memcpy(&s->dsts[k].sin6_addr, pkt + 24, 16);  // each packet's own destination
        s->iovs[k].iov_base = pkt;
        s->iovs[k].iov_len = lens[i + k];
        struct msghdr *m = &s->msgs[k].msg_hdr;
        memset(m, 0, sizeof *m);
        m->msg_name = &s->dsts[k];
        m->msg_namelen = sizeof s->dsts[k];
        m->msg_iov = &s->iovs[k];
        m->msg_iovlen = 1;
      }
      int rc = sendmmsg(fd, s->msgs, n, MSG_DONTWAIT);
      if (rc > 0) {
        sent += rc;
        i += rc;
        continue;
      }
      if (rc < 0 && errno == EINTR) continue;
      last = rc < 0 ? errno : EIO;
      if (last == EAGAIN || last == ENOBUFS) break;
      failed++;  // sendmmsg reports the first packet's error: skip that packet and go on
      i++;
    }
  }
  status[0] = sent;
  status[1] = failed;
  status[2] = last;
  napi_value r;
  NAPI_CHECK(napi_create_int32(env, sent, &r));
  return r;
}

// native/sd_notify.c: sd_notify(3) for the daemons (src/lib/sd-notify.ts), in the same addon so there is one build.
napi_value dstm_sd_notify(napi_env env, napi_callback_info info);
// native/udp.c: batched UDP sockets for the RPC server (src/rpc/udp-batch.ts).
napi_value dstm_udp_init(napi_env env, napi_value exports);

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      NAPI_METHOD("openTun", open_tun),
      NAPI_METHOD("setMtu", set_mtu),
      NAPI_METHOD("openRaw6", open_raw6),
      NAPI_METHOD("closeFd", close_fd),
      NAPI_METHOD("attachQueueFilter", attach_queue_filter),
      NAPI_METHOD("startReader", start_reader),
      NAPI_METHOD("stopReader", stop_reader),
      NAPI_METHOD("newSender", new_sender),
      NAPI_METHOD("sendBatch", send_batch),
      NAPI_METHOD("sdNotify", dstm_sd_notify),
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return dstm_udp_init(env, exports);
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
