// Batched UDP sockets (src/rpc/udp-batch.ts): what Node's dgram does one datagram at a time, done a batch at a time.
//
// - udpOpen binds a non-blocking UDP socket (IPv6 with IPV6_V6ONLY, or IPv4) and asks for the destination address of
//   each datagram (IPV6_RECVPKTINFO / IP_PKTINFO), so that a reply leaves from the address its call came to even on a
//   wildcard socket of a host with several addresses.
// - udpStart watches the socket with a libuv poll handle: when it is readable, ONE recvmmsg drains up to maxBatch
//   datagrams into fixed-size slots of a shared buffer, each slot's peer and local address go into a shared metadata
//   array, and JavaScript is called once with the count.
// - udpSend sends a batch of datagrams from one buffer with ONE sendmmsg per maxBatch, each to its own peer and from
//   its own source address (IPV6_PKTINFO / IP_PKTINFO). When the socket's send buffer is full the rest is left to
//   JavaScript, and the watcher also waits for the socket to be writable: JavaScript is then called with count 0.
// Nothing is allocated per datagram: the mmsghdr/iovec/sockaddr/cmsg arrays belong to the handle.
//
// Metadata of one datagram: 16 uint32 words (native byte order), the same layout for received and sent datagrams:
//   0–3  peer address (16 bytes for IPv6; IPv4 in the first 4 bytes)
//   4    peer scope id (IPv6 link-local)
//   5    peer port
//   6    flags: UDP_TRUNCATED (received longer than the slot: the kernel cut it), UDP_HAS_LOCAL (words 8–12 are set)
//   7    family: 4 or 6
//   8–11 local address the datagram came to (sent: the source address to use)
//   12   interface index it came in on
#define _GNU_SOURCE
#include <node_api.h>
#include "napi_util.h"
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define META_WORDS 16
#define UDP_TRUNCATED 1
#define UDP_HAS_LOCAL 2
#define UDP_MAX_BATCH 1024


static napi_value udp_open(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!napi_util_args(env, info, 4, argv)) return NULL;
  char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
  size_t hlen = 0;
  int32_t port, rcvbuf;
  bool v6;
  if (napi_get_value_string_utf8(env, argv[0], host, sizeof host, &hlen) != napi_ok ||
      napi_get_value_bool(env, argv[2], &v6) != napi_ok) {
    napi_throw_type_error(env, NULL, "udpOpen: expected (host: string, port, ipv6: boolean, recvBufferSize)");
    return NULL;
  }
  if (!napi_util_i32(env, argv[1], &port) || !napi_util_i32(env, argv[3], &rcvbuf)) return NULL;
  if (hlen >= sizeof host - 1) return napi_util_throw_sys(env, "bind", EINVAL, "(address too long)");
  struct sockaddr_storage ss;
  socklen_t sslen;
  memset(&ss, 0, sizeof ss);
  if (v6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    char *pct = strchr(host, '%');
    if (pct) {
      *pct++ = 0;
      char *end;
      unsigned long idx = strtoul(pct, &end, 10);
      a->sin6_scope_id = (*pct && !*end) ? (uint32_t)idx : if_nametoindex(pct);
      if (!a->sin6_scope_id) return napi_util_throw_sys(env, "bind", ENXIO, pct);
    }
    if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) return napi_util_throw_sys(env, "bind", EINVAL, host);
    sslen = sizeof *a;
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1) return napi_util_throw_sys(env, "bind", EINVAL, host);
    sslen = sizeof *a;
  }
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return napi_util_throw_sys(env, "socket", errno, NULL);
  int one = 1;
  const char *what = NULL;
  if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);  // capped by rmem_max, as for dgram
  if (v6) {
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) what = "setsockopt IPV6_V6ONLY";
    else if (setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one) < 0) what = "setsockopt IPV6_RECVPKTINFO";
  } else if (setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one) < 0) {
    what = "setsockopt IP_PKTINFO";
  }
  char detail[sizeof host + 16];
  if (!what && bind(fd, (struct sockaddr *)&ss, sslen) < 0) {
    what = "bind";
    snprintf(detail, sizeof detail, "%s:%d", host, port);
  }
  socklen_t len = sizeof ss;
  if (!what && getsockname(fd, (struct sockaddr *)&ss, &len) < 0) what = "getsockname";
  if (what) {
    int err = errno;
    close(fd);
    return napi_util_throw_sys(env, what, err, strcmp(what, "bind") == 0 ? detail : NULL);
  }
  char text[INET6_ADDRSTRLEN];
  int bound_port;
  if (v6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
    bound_port = ntohs(a->sin6_port);
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
    bound_port = ntohs(a->sin_port);
  }
  napi_value result, fdv, addrv, portv;
  NAPI_CHECK(napi_create_array_with_length(env, 3, &result));
  NAPI_CHECK(napi_create_int32(env, fd, &fdv));
  NAPI_CHECK(napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &addrv));
  NAPI_CHECK(napi_create_int32(env, bound_port, &portv));
  NAPI_CHECK(napi_set_element(env, result, 0, fdv));
  NAPI_CHECK(napi_set_element(env, result, 1, addrv));
  NAPI_CHECK(napi_set_element(env, result, 2, portv));
  return result;
}

typedef union {
  char buf[CMSG_SPACE(sizeof(struct in6_pktinfo))];
  struct cmsghdr align;
} pktinfo_cmsg;

typedef struct {
  js_poller jp;  // first: the handle's address is the socket's; keeps rx, meta and lens alive
  int fd;
  int v6;
  int events;  // UV_READABLE, plus UV_WRITABLE while a send waits for room
  int closed;
  int refs;  // the JavaScript handle and the open uv handle: freed when both are gone
  unsigned max_batch;
  uint8_t *rx;
  size_t slot_size;
  uint32_t *meta;
  uint32_t *lens;
  // receiving
  struct mmsghdr *rmsgs;
  struct iovec *riovs;
  struct sockaddr_in6 *rnames;  // large enough for sockaddr_in too
  pktinfo_cmsg *rctl;
  // sending
  struct mmsghdr *smsgs;
  struct iovec *siovs;
  struct sockaddr_in6 *snames;
  pktinfo_cmsg *sctl;
} udp_sock;

static void free_sock(udp_sock *s) {
  free(s->rmsgs);
  free(s->riovs);
  free(s->rnames);
  free(s->rctl);
  free(s->smsgs);
  free(s->siovs);
  free(s->snames);
  free(s->sctl);
  free(s);
}

static void release(udp_sock *s) {
  if (--s->refs == 0) free_sock(s);
}

static void on_closed(uv_handle_t *handle) {
  release((udp_sock *)handle);
}

static void finalize(napi_env env, void *data, void *hint) {
  release(data);
}

/** Fills in one datagram's metadata from what recvmmsg left in message i. */
static void read_meta(udp_sock *s, unsigned i, uint32_t *m) {
  struct msghdr *h = &s->rmsgs[i].msg_hdr;
  memset(m, 0, META_WORDS * 4);
  uint32_t flags = (h->msg_flags & MSG_TRUNC) ? UDP_TRUNCATED : 0;
  if (s->v6) {
    struct sockaddr_in6 *a = &s->rnames[i];
    memcpy(m, &a->sin6_addr, 16);
    m[4] = a->sin6_scope_id;
    m[5] = ntohs(a->sin6_port);
    m[7] = 6;
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&s->rnames[i];
    memcpy(m, &a->sin_addr, 4);
    m[5] = ntohs(a->sin_port);
    m[7] = 4;
  }
  for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
    if (s->v6 && c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
      struct in6_pktinfo pi;
      memcpy(&pi, CMSG_DATA(c), sizeof pi);
      // A multicast destination cannot be a source address: the kernel then picks one.
      if (pi.ipi6_addr.s6_addr[0] != 0xff) {
        memcpy(m + 8, &pi.ipi6_addr, 16);
        m[12] = pi.ipi6_ifindex;
        flags |= UDP_HAS_LOCAL;
      }
    } else if (!s->v6 && c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
      struct in_pktinfo pi;
      memcpy(&pi, CMSG_DATA(c), sizeof pi);
      // ipi_spec_dst: the local address the datagram was for (for a broadcast, the interface's own address).
      memcpy(m + 8, &pi.ipi_spec_dst, 4);
      m[12] = pi.ipi_ifindex;
      flags |= UDP_HAS_LOCAL;
    }
  }
  m[6] = flags;
}

/** Calls JavaScript with a datagram count, 0 when the socket became writable, or −errno on a poll error. */
static void on_events(uv_poll_t *handle, int status, int events) {
  udp_sock *s = (udp_sock *)handle;
  if (status < 0) {
    uv_poll_stop(handle);
    js_poller_call(&s->jp, status);
    return;
  }
  if (events & UV_WRITABLE) {
    s->events = UV_READABLE;
    uv_poll_start(&s->jp.poll, s->events, on_events);
    js_poller_call(&s->jp, 0);
    if (s->closed) return;
  }
  if (!(events & UV_READABLE)) return;
  for (unsigned i = 0; i < s->max_batch; i++) {
    struct msghdr *h = &s->rmsgs[i].msg_hdr;
    h->msg_namelen = sizeof s->rnames[i];
    h->msg_controllen = sizeof s->rctl[i].buf;
    h->msg_flags = 0;
  }
  int got;
  do got = recvmmsg(s->fd, s->rmsgs, s->max_batch, MSG_DONTWAIT, NULL);
  while (got < 0 && errno == EINTR);
  if (got <= 0) return;  // EAGAIN: someone else drained it; other errors (ICMP reports) concern no call
  for (int i = 0; i < got; i++) {
    read_meta(s, i, s->meta + (size_t)i * META_WORDS);
    s->lens[i] = s->rmsgs[i].msg_len;
  }
  js_poller_call(&s->jp, got);
}

// udpStart(fd, rx: Uint8Array, slotSize, meta: Uint32Array, lengths: Uint32Array, maxBatch, ipv6, cb) → handle
// cb(count) once per readable event: datagram i is rx[i*slotSize, +lengths[i]) with metadata meta[i*16, +16).
// cb(0): the socket is writable again after udpSend left datagrams unsent. cb(-errno): polling failed and stopped.
static napi_value udp_start(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  if (!napi_util_args(env, info, 8, argv)) return NULL;
  int32_t fd, slot_size, max_batch;
  void *rx, *meta, *lens;
  size_t rx_len, meta_len, lens_len;
  bool v6;
  if (!napi_util_i32(env, argv[0], &fd) || !napi_util_bytes(env, argv[1], &rx, &rx_len) || !napi_util_i32(env, argv[2], &slot_size) ||
      !napi_util_bytes(env, argv[3], &meta, &meta_len) || !napi_util_bytes(env, argv[4], &lens, &lens_len) ||
      !napi_util_i32(env, argv[5], &max_batch))
    return NULL;
  NAPI_CHECK(napi_get_value_bool(env, argv[6], &v6));
  if (max_batch < 1 || max_batch > UDP_MAX_BATCH || slot_size < 1 || (size_t)max_batch * slot_size > rx_len ||
      (size_t)max_batch * META_WORDS * 4 > meta_len || (size_t)max_batch * 4 > lens_len) {
    napi_throw_range_error(env, NULL, "udpStart: buffer geometry does not fit");
    return NULL;
  }
  udp_sock *s = calloc(1, sizeof *s);
  if (!s) return napi_util_throw_sys(env, "calloc", ENOMEM, NULL);
  s->fd = fd;
  s->v6 = v6;
  s->max_batch = max_batch;
  s->rx = rx;
  s->slot_size = slot_size;
  s->meta = meta;
  s->lens = lens;
  s->rmsgs = calloc(max_batch, sizeof *s->rmsgs);
  s->riovs = calloc(max_batch, sizeof *s->riovs);
  s->rnames = calloc(max_batch, sizeof *s->rnames);
  s->rctl = calloc(max_batch, sizeof *s->rctl);
  s->smsgs = calloc(max_batch, sizeof *s->smsgs);
  s->siovs = calloc(max_batch, sizeof *s->siovs);
  s->snames = calloc(max_batch, sizeof *s->snames);
  s->sctl = calloc(max_batch, sizeof *s->sctl);
  if (!s->rmsgs || !s->riovs || !s->rnames || !s->rctl || !s->smsgs || !s->siovs || !s->snames || !s->sctl) {
    free_sock(s);
    return napi_util_throw_sys(env, "calloc", ENOMEM, NULL);
  }
  for (int i = 0; i < max_batch; i++) {
    s->riovs[i].iov_base = s->rx + (size_t)i * slot_size;
    s->riovs[i].iov_len = slot_size;
    struct msghdr *h = &s->rmsgs[i].msg_hdr;
    h->msg_iov = &s->riovs[i];
    h->msg_iovlen = 1;
    h->msg_name = &s->rnames[i];
    h->msg_control = s->rctl[i].buf;
  }
  s->events = UV_READABLE;
  s->refs = 1;  // the uv handle: if watching fails, closing it frees the socket
  napi_value arrays[] = {argv[1], argv[3], argv[4]};
  if (!js_poller_start(env, &s->jp, fd, s->events, on_events, on_closed, "dstm:udp", argv[7], arrays, 3)) return NULL;
  s->refs = 2;  // and the JavaScript handle
  napi_value ext;
  NAPI_CHECK(napi_create_external(env, s, finalize, NULL, &ext));
  return ext;
}

static udp_sock *get_sock(napi_env env, napi_value v) {
  udp_sock *s;
  if (napi_get_value_external(env, v, (void **)&s) != napi_ok) {
    napi_throw_type_error(env, NULL, "dstm_native udp: expected a socket handle");
    return NULL;
  }
  if (s->closed) {
    napi_throw_error(env, "ERR_SOCKET_DGRAM_NOT_RUNNING", "the UDP socket is closed");
    return NULL;
  }
  return s;
}

/** Message k of a sendmmsg batch: datagram buf[off, +len) to the peer in metadata m, from its local address. */
static void fill_send(udp_sock *s, unsigned k, uint8_t *data, uint32_t len, const uint32_t *m) {
  struct msghdr *h = &s->smsgs[k].msg_hdr;
  memset(h, 0, sizeof *h);
  s->siovs[k].iov_base = data;
  s->siovs[k].iov_len = len;
  h->msg_iov = &s->siovs[k];
  h->msg_iovlen = 1;
  h->msg_name = &s->snames[k];
  memset(&s->snames[k], 0, sizeof s->snames[k]);
  if (s->v6) {
    struct sockaddr_in6 *a = &s->snames[k];
    a->sin6_family = AF_INET6;
    memcpy(&a->sin6_addr, m, 16);
    a->sin6_scope_id = m[4];
    a->sin6_port = htons((uint16_t)m[5]);
    h->msg_namelen = sizeof *a;
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&s->snames[k];
    a->sin_family = AF_INET;
    memcpy(&a->sin_addr, m, 4);
    a->sin_port = htons((uint16_t)m[5]);
    h->msg_namelen = sizeof *a;
  }
  if (!(m[6] & UDP_HAS_LOCAL)) return;
  h->msg_control = s->sctl[k].buf;
  struct cmsghdr *c = (struct cmsghdr *)s->sctl[k].buf;
  if (s->v6) {
    h->msg_controllen = CMSG_SPACE(sizeof(struct in6_pktinfo));
    c->cmsg_level = IPPROTO_IPV6;
    c->cmsg_type = IPV6_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(struct in6_pktinfo));
    struct in6_pktinfo pi;
    memset(&pi, 0, sizeof pi);
    memcpy(&pi.ipi6_addr, m + 8, 16);
    // The interface only where the source address is link-local (the peer's scope id routes the rest): a global
    // source must not pin the reply to the interface the call came in on.
    if (pi.ipi6_addr.s6_addr[0] == 0xfe && (pi.ipi6_addr.s6_addr[1] & 0xc0) == 0x80) pi.ipi6_ifindex = m[12];
    memcpy(CMSG_DATA(c), &pi, sizeof pi);
  } else {
    h->msg_controllen = CMSG_SPACE(sizeof(struct in_pktinfo));
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
    struct in_pktinfo pi;
    memset(&pi, 0, sizeof pi);
    memcpy(&pi.ipi_spec_dst, m + 8, 4);  // the source address; ifindex 0: routing picks the interface
    memcpy(CMSG_DATA(c), &pi, sizeof pi);
  }
}

// udpSend(handle, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, meta: Uint32Array, count,
//         status: Int32Array(3)) → datagrams handled (sent + failed)
// status = [sent, failed, lastErrno]. A datagram the kernel refuses (EMSGSIZE, unreachable, ...) is skipped and
// counted as failed, as dgram reports such errors per datagram; on EAGAIN/ENOBUFS the rest is left unsent and the
// handle calls back with count 0 once the socket is writable.
static napi_value udp_send(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  if (!napi_util_args(env, info, 7, argv)) return NULL;
  udp_sock *s = get_sock(env, argv[0]);
  if (!s) return NULL;
  void *buf8, *offs8, *lens8, *meta8, *status8;
  size_t buf_len, offs_len, lens_len, meta_len, status_len;
  int32_t count;
  if (!napi_util_bytes(env, argv[1], &buf8, &buf_len) || !napi_util_bytes(env, argv[2], &offs8, &offs_len) ||
      !napi_util_bytes(env, argv[3], &lens8, &lens_len) || !napi_util_bytes(env, argv[4], &meta8, &meta_len) ||
      !napi_util_i32(env, argv[5], &count) || !napi_util_bytes(env, argv[6], &status8, &status_len))
    return NULL;
  uint8_t *buf = buf8;
  uint32_t *offs = offs8, *lens = lens8, *meta = meta8;
  int32_t *status = status8;
  if (count < 0 || (size_t)count * 4 > offs_len || (size_t)count * 4 > lens_len ||
      (size_t)count * META_WORDS * 4 > meta_len || status_len < 12) {
    napi_throw_range_error(env, NULL, "udpSend: count exceeds the arrays");
    return NULL;
  }
  for (int i = 0; i < count; i++) {
    if ((size_t)offs[i] + lens[i] > buf_len) {
      napi_throw_range_error(env, NULL, "udpSend: datagram outside the buffer");
      return NULL;
    }
  }
  int sent = 0, failed = 0, last = 0, i = 0;
  while (i < count) {
    int n = count - i < (int)s->max_batch ? count - i : (int)s->max_batch;
    for (int k = 0; k < n; k++) fill_send(s, k, buf + offs[i + k], lens[i + k], meta + (size_t)(i + k) * META_WORDS);
    int rc = sendmmsg(s->fd, s->smsgs, n, MSG_DONTWAIT);
    if (rc > 0) {
      sent += rc;
      i += rc;
      continue;
    }
    if (rc < 0 && errno == EINTR) continue;
    last = rc < 0 ? errno : EIO;
    if (last == EAGAIN || last == ENOBUFS) {
      if (!(s->events & UV_WRITABLE)) {
        s->events = UV_READABLE | UV_WRITABLE;
        uv_poll_start(&s->jp.poll, s->events, on_events);
      }
      break;
    }
    failed++;  // sendmmsg reports the first datagram's error: skip it and go on
    i++;
  }
  status[0] = sent;
  status[1] = failed;
  status[2] = last;
  napi_value r;
  NAPI_CHECK(napi_create_int32(env, sent + failed, &r));
  return r;
}

// udpClose(handle): stops watching and closes the socket at once (its port is free when this returns).
static napi_value udp_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!napi_util_args(env, info, 1, argv)) return NULL;
  udp_sock *s = get_sock(env, argv[0]);
  if (!s) return NULL;
  s->closed = 1;
  // uv_close takes the fd out of epoll before it returns, so the fd can be closed now; the handle is freed later.
  js_poller_stop(&s->jp, on_closed);
  close(s->fd);
  return NULL;
}

// udpIfName(index) → the interface's name ('' if there is none), for the %scope of a link-local peer as Node gives it.
static napi_value if_name(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!napi_util_args(env, info, 1, argv)) return NULL;
  int32_t idx;
  if (!napi_util_i32(env, argv[0], &idx)) return NULL;
  char name[IF_NAMESIZE + 1];
  if (!if_indextoname((unsigned)idx, name)) name[0] = 0;
  napi_value r;
  NAPI_CHECK(napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &r));
  return r;
}

napi_value dstm_udp_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      NAPI_METHOD("udpOpen", udp_open),
      NAPI_METHOD("udpStart", udp_start),
      NAPI_METHOD("udpSend", udp_send),
      NAPI_METHOD("udpClose", udp_close),
      NAPI_METHOD("udpIfName", if_name),
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
