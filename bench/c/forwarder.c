/* The benchmark's baseline: a minimal, deliberately unbatched IPv4-in-IPv6 forwarder doing the same job as the
 * dstm data plane (TUN device <-> raw IPv6 socket for next header 4), one read() or recvfrom() and one write() or
 * sendto() per packet, as a straightforward C tunnel daemon would.
 *
 *   forwarder TUN LOCAL6 REMOTE6
 *
 * Creates the TUN device (IFF_TUN|IFF_NO_PI); the caller configures its addresses and routes. Every IPv4 packet
 * read from the TUN goes to REMOTE6; every IPv4-in-IPv6 packet received from REMOTE6 is written to the TUN.
 * Runs until killed. Build: cc -O2 -o forwarder forwarder.c */
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *what) {
  perror(what);
  exit(1);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s TUN LOCAL6 REMOTE6\n", argv[0]);
    return 2;
  }
  struct sockaddr_in6 local = {.sin6_family = AF_INET6}, remote = {.sin6_family = AF_INET6}, from;
  if (inet_pton(AF_INET6, argv[2], &local.sin6_addr) != 1 || inet_pton(AF_INET6, argv[3], &remote.sin6_addr) != 1) {
    fprintf(stderr, "bad IPv6 address\n");
    return 2;
  }

  int tun = open("/dev/net/tun", O_RDWR);
  if (tun < 0) die("open /dev/net/tun");
  struct ifreq ifr = {0};
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
  if (ioctl(tun, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");

  int raw = socket(AF_INET6, SOCK_RAW, IPPROTO_IPIP);
  if (raw < 0) die("socket");
  if (bind(raw, (struct sockaddr *)&local, sizeof local) < 0) die("bind");

  /* Ready: the bench waits for this line before configuring the device. */
  printf("ready\n");
  fflush(stdout);

  static unsigned char buf[65536];
  struct pollfd fds[2] = {{.fd = tun, .events = POLLIN}, {.fd = raw, .events = POLLIN}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) die("poll");
    if (fds[0].revents & POLLIN) {
      ssize_t n = read(tun, buf, sizeof buf);
      if (n > 0 && (buf[0] >> 4) == 4) sendto(raw, buf, (size_t)n, 0, (struct sockaddr *)&remote, sizeof remote);
    }
    if (fds[1].revents & POLLIN) {
      socklen_t fl = sizeof from;
      ssize_t n = recvfrom(raw, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
      if (n > 0 && memcmp(&from.sin6_addr, &remote.sin6_addr, 16) == 0 && (buf[0] >> 4) == 4) write(tun, buf, (size_t)n);
    }
  }
}
