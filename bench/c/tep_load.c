/* Traffic generator and counters of bench/tep-loss.bench.ts (RFC 8219 throughput of `dstm tep`, one direction at a
 * time). Every packet carries a 64-byte IPv4 UDP packet (20 + 8 + 36 bytes), to or from binding i's pool address
 * POOL4 + i + 1; binding i's node is NODE6 with its last 32 bits i + 1. i walks all BINDINGS in a scattered order.
 *
 *   tep_load send decap IFACE DSTMAC TEP6 NODE6 POOL4 HOST4 BINDINGS RATE SECONDS
 *       IPv4-in-IPv6 frames NODE6+i+1 -> TEP6 carrying POOL4+i+1 -> HOST4 (the node side's traffic to IPv4)
 *   tep_load send encap IFACE DSTMAC TEP6 NODE6 POOL4 HOST4 BINDINGS RATE SECONDS
 *       IPv4 frames HOST4 -> POOL4+i+1 (the IPv4 side's traffic to the nodes)
 *     Sends on a packet socket (sendmmsg, 64 frames a call) to DSTMAC at RATE packets/s (0: as fast as it can) for
 *     SECONDS, then prints "sent N seconds S".
 *   tep_load recv udp PORT      counts UDP datagrams to PORT (recvmmsg)
 *   tep_load recv ipip IFACE    counts IPv4-in-IPv6 packets arriving on IFACE (packet socket, recvmmsg)
 *     Print "ready", then on each SIGUSR1 "count N drops D" (D: the packet socket's own drops; 0 for udp).
 * Build: cc -O2 -o tep_load tep_load.c */
#define _GNU_SOURCE /* sendmmsg, recvmmsg */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define IP4_LEN 64
#define IP6_HDR 40
#define RCVBUF (32 << 20)

static void die(const char *what) {
  perror(what);
  exit(1);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint16_t ip4_checksum(const uint8_t *h) {
  uint32_t s = 0;
  for (int i = 0; i < 20; i += 2) s += (h[i] << 8) | h[i + 1];
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return (uint16_t)~s;
}

/* A 64-byte IPv4 UDP packet src -> dst (addresses in host order) at p; UDP checksum 0 (none, allowed in IPv4). */
static void udp4(uint8_t *p, uint32_t src, uint32_t dst) {
  memset(p, 0, IP4_LEN);
  p[0] = 0x45;
  p[3] = IP4_LEN;
  p[6] = 0x40; /* DF */
  p[8] = 64;
  p[9] = 17;
  uint32_t s = htonl(src), d = htonl(dst);
  memcpy(p + 12, &s, 4);
  memcpy(p + 16, &d, 4);
  uint16_t c = htons(ip4_checksum(p));
  memcpy(p + 10, &c, 2);
  p[20] = 0x9c; /* source port 40000, destination port 9 (discard) */
  p[21] = 0x40;
  p[23] = 9;
  p[25] = IP4_LEN - 20;
}

static int parse_mac(const char *s, uint8_t *mac) {
  return sscanf(s, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4], &mac[5]) == 6;
}

static int send_main(int argc, char **argv) {
  if (argc != 12) {
    fprintf(stderr, "usage: %s send decap|encap IFACE DSTMAC TEP6 NODE6 POOL4 HOST4 BINDINGS RATE SECONDS\n", argv[0]);
    return 2;
  }
  int decap = strcmp(argv[2], "decap") == 0;
  struct in6_addr tep6, node6;
  struct in_addr pool4, host4;
  struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_halen = 6};
  long bindings = atol(argv[9]);
  double rate = atof(argv[10]), seconds = atof(argv[11]);
  if ((!decap && strcmp(argv[2], "encap") != 0) || !parse_mac(argv[4], to.sll_addr) ||
      inet_pton(AF_INET6, argv[5], &tep6) != 1 || inet_pton(AF_INET6, argv[6], &node6) != 1 ||
      inet_pton(AF_INET, argv[7], &pool4) != 1 || inet_pton(AF_INET, argv[8], &host4) != 1 || bindings < 1 ||
      rate < 0 || seconds <= 0) {
    fprintf(stderr, "%s send: bad arguments\n", argv[0]);
    return 2;
  }
  to.sll_ifindex = (int)if_nametoindex(argv[3]);
  if (to.sll_ifindex == 0) die(argv[3]);
  to.sll_protocol = htons(decap ? ETH_P_IPV6 : ETH_P_IP);
  int fd = socket(AF_PACKET, SOCK_DGRAM, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
  prctl(PR_SET_TIMERSLACK, 1UL); /* the pacing sleeps are tens of microseconds */

  size_t len = decap ? IP6_HDR + IP4_LEN : IP4_LEN;
  static uint8_t pkts[BATCH][IP6_HDR + IP4_LEN];
  struct iovec iov[BATCH];
  struct mmsghdr msgs[BATCH];
  memset(msgs, 0, sizeof msgs);
  for (int k = 0; k < BATCH; k++) {
    iov[k].iov_base = pkts[k];
    iov[k].iov_len = len;
    msgs[k].msg_hdr.msg_iov = &iov[k];
    msgs[k].msg_hdr.msg_iovlen = 1;
    msgs[k].msg_hdr.msg_name = &to;
    msgs[k].msg_hdr.msg_namelen = sizeof to;
    if (decap) {
      uint8_t *h = pkts[k];
      h[0] = 0x60;
      h[4] = IP4_LEN >> 8;
      h[5] = IP4_LEN & 0xff;
      h[6] = 4; /* next header: IPv4 */
      h[7] = 64;
      memcpy(h + 8, &node6, 16);
      memcpy(h + 24, &tep6, 16);
    }
  }
  /* i = (n * STRIDE) mod BINDINGS visits every binding once per BINDINGS packets, scattered over the table (the
   * stride is a prime above 10^6, so coprime with any smaller count) */
  const uint64_t STRIDE = 1000003;
  uint32_t base4 = ntohl(pool4.s_addr), h4 = ntohl(host4.s_addr);
  uint32_t node_hi;
  memcpy(&node_hi, node6.s6_addr + 12, 4);
  node_hi = ntohl(node_hi);

  uint64_t sent = 0, target = rate > 0 ? (uint64_t)(rate * seconds) : UINT64_MAX;
  double t0 = now(), end = t0 + seconds;
  for (;;) {
    double t = now();
    if (t >= end || sent >= target) break;
    uint64_t due = rate > 0 ? (uint64_t)((t - t0) * rate) + 1 : sent + BATCH;
    if (due > target) due = target;
    if (due <= sent) {
      double wait = (sent + 1) / rate - (t - t0);
      struct timespec ts = {0, (long)(wait * 1e9)};
      nanosleep(&ts, NULL);
      continue;
    }
    int n = due - sent > BATCH ? BATCH : (int)(due - sent);
    for (int k = 0; k < n; k++) {
      uint32_t i = (uint32_t)(((sent + k) * STRIDE) % (uint64_t)bindings);
      if (decap) {
        uint8_t *h = pkts[k];
        uint32_t v = htonl(node_hi + i + 1);
        memcpy(h + 8 + 12, &v, 4);
        udp4(h + IP6_HDR, base4 + i + 1, h4);
      } else {
        udp4(pkts[k], h4, base4 + i + 1);
      }
    }
    int r = sendmmsg(fd, msgs, n, 0);
    if (r < 0) {
      if (errno == ENOBUFS || errno == EAGAIN) continue;
      die("sendmmsg");
    }
    sent += r;
  }
  printf("sent %llu seconds %.6f\n", (unsigned long long)sent, now() - t0);
  return 0;
}

static volatile sig_atomic_t report;

static void on_usr1(int sig) {
  (void)sig;
  report = 1;
}

static int recv_main(int argc, char **argv) {
  if (argc != 4 || (strcmp(argv[2], "udp") != 0 && strcmp(argv[2], "ipip") != 0)) {
    fprintf(stderr, "usage: %s recv udp PORT | recv ipip IFACE\n", argv[0]);
    return 2;
  }
  int ipip = strcmp(argv[2], "ipip") == 0;
  int fd;
  if (ipip) {
    fd = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IPV6));
    if (fd < 0) die("socket");
    struct sockaddr_ll me = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IPV6)};
    me.sll_ifindex = (int)if_nametoindex(argv[3]);
    if (me.sll_ifindex == 0) die(argv[3]);
    if (bind(fd, (struct sockaddr *)&me, sizeof me) < 0) die("bind");
  } else {
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3]))};
    if (bind(fd, (struct sockaddr *)&me, sizeof me) < 0) die("bind");
  }
  int rcvbuf = RCVBUF;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  struct timeval tick = {0, 100000}; /* a report asked for between two calls waits at most this long */
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tick, sizeof tick);
  struct sigaction sa = {.sa_handler = on_usr1}; /* no SA_RESTART: recvmmsg returns EINTR */
  sigaction(SIGUSR1, &sa, NULL);

  static uint8_t bufs[BATCH][256];
  struct iovec iov[BATCH];
  struct mmsghdr msgs[BATCH];
  struct sockaddr_ll from[BATCH];
  memset(msgs, 0, sizeof msgs);
  for (int k = 0; k < BATCH; k++) {
    iov[k].iov_base = bufs[k];
    iov[k].iov_len = sizeof bufs[k];
    msgs[k].msg_hdr.msg_iov = &iov[k];
    msgs[k].msg_hdr.msg_iovlen = 1;
  }
  unsigned long long count = 0, drops = 0;
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    for (int k = 0; k < BATCH; k++) {
      msgs[k].msg_hdr.msg_name = ipip ? &from[k] : NULL;
      msgs[k].msg_hdr.msg_namelen = ipip ? sizeof from[k] : 0;
    }
    int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
    for (int k = 0; k < n; k++) {
      /* ipip: only what arrives (not what this host sends), IPv6 with next header 4 and a whole inner packet */
      if (ipip && (from[k].sll_pkttype == PACKET_OUTGOING || msgs[k].msg_len < IP6_HDR + IP4_LEN ||
                   (bufs[k][0] >> 4) != 6 || bufs[k][6] != 4))
        continue;
      count++;
    }
    if (n < 0 && errno != EINTR && errno != EAGAIN) die("recvmmsg");
    if (report) {
      report = 0;
      if (ipip) {
        struct tpacket_stats st;
        socklen_t sl = sizeof st;
        if (getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &st, &sl) == 0) drops += st.tp_drops; /* reset by reading */
      }
      printf("count %llu drops %llu\n", count, drops);
      fflush(stdout);
    }
  }
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "send") == 0) return send_main(argc, argv);
  if (argc >= 2 && strcmp(argv[1], "recv") == 0) return recv_main(argc, argv);
  fprintf(stderr, "usage: %s send ... | recv ... (see the top of tep_load.c)\n", argv[0]);
  return 2;
}
