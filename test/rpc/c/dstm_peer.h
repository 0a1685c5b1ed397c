/* Shared by the rpcgen-built C peers of the RPC tests and benchmark: the one reply transform every test server
 * applies (the TypeScript servers apply the same, see test/rpc/util.ts), and address helpers. */
#ifndef DSTM_PEER_H
#define DSTM_PEER_H
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include "dstm.h"

/* REQUEST_REQ -> REQUEST_REP (RELEASE_REQ -> RELEASE_REP); ends = starts + extend; keep + 1; bytes echoed. */
static inline void dstm_transform(const struct packet *in, struct packet *out)
{
	*out = *in;
	out->type = in->type + 1;
	out->ends = (u_int)(in->starts + in->extend);
	out->keep = (u_int)(in->keep + 1);
}

static inline void dstm_hex(char *dst, const char *src, int n)
{
	for (int i = 0; i < n; i++)
		sprintf(dst + 2 * i, "%02x", (unsigned char)src[i]);
}

/* One line per packet, the format test/rpc/util.ts parses. */
static inline void dstm_print(const char *what, const struct packet *p)
{
	char local[33], mask[9], i4[9], tep4[9], tep6[33];
	dstm_hex(local, p->local, 16);
	dstm_hex(mask, p->mask, 4);
	dstm_hex(i4, p->i4addr, 4);
	dstm_hex(tep4, p->tep4, 4);
	dstm_hex(tep6, p->tep6, 16);
	printf("%s type=%d local=%s mask=%s i4addr=%s tep4=%s tep6=%s ends=%u starts=%u extend=%u keep=%u\n", what, p->type,
	       local, mask, i4, tep4, tep6, (u_int)p->ends, (u_int)p->starts, (u_int)p->extend, (u_int)p->keep);
}

/* A client handle for prog/1 at [host]:port over netid (udp6, tcp6, udp or tcp), without asking rpcbind. */
static inline CLIENT *dstm_client(const char *netid, const char *host, int port, u_long prog, u_long vers)
{
	struct netconfig *nc = getnetconfigent(netid);
	struct sockaddr_storage ss;
	struct netbuf nb;
	memset(&ss, 0, sizeof ss);
	if (nc == NULL) {
		fprintf(stderr, "unknown netid %s\n", netid);
		return NULL;
	}
	if (strchr(host, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		inet_pton(AF_INET6, host, &s6->sin6_addr);
		nb.len = nb.maxlen = sizeof *s6;
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		inet_pton(AF_INET, host, &s4->sin_addr);
		nb.len = nb.maxlen = sizeof *s4;
	}
	nb.buf = &ss;
	CLIENT *cl = clnt_tli_create(RPC_ANYFD, nc, &nb, prog, vers, 0, 0);
	freenetconfigent(nc);
	if (cl == NULL)
		clnt_pcreateerror("clnt_tli_create");
	return cl;
}
#endif
