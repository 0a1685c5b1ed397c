/* Load generator of bench/server.bench.ts, the same for dstm server and the C baseline: THREADS nodes, each calling
 * from its own IPv6 source address (SRC_PREFIX followed by the thread number + 1, in hex; the addresses must exist
 * on the host) with its own libtirpc client handle, REQUEST then RELEASE of the leased address, back to back, for
 * SECONDS. Prints "calls N errors E seconds S" (a REQUEST and a RELEASE are two calls).
 * `server_load NETID PORT PROG THREADS SECONDS SRC_PREFIX` (the server is on [::1]). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include "dstm.h"
#include "load.h"

static const char *netid, *prefix;
static int port;
static u_long prog;

static CLIENT *connect_from(const char *src)
{
	struct netconfig *nc = getnetconfigent(netid);
	int tcp = strncmp(netid, "tcp", 3) == 0;
	int fd = socket(AF_INET6, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
	struct sockaddr_in6 me, to;
	memset(&me, 0, sizeof me);
	me.sin6_family = AF_INET6;
	inet_pton(AF_INET6, src, &me.sin6_addr);
	memset(&to, 0, sizeof to);
	to.sin6_family = AF_INET6;
	to.sin6_port = htons(port);
	to.sin6_addr = in6addr_loopback;
	if (bind(fd, (struct sockaddr *)&me, sizeof me) < 0) {
		perror(src);
		return NULL;
	}
	if (tcp && connect(fd, (struct sockaddr *)&to, sizeof to) < 0) {
		perror("connect");
		return NULL;
	}
	struct netbuf nb = { sizeof to, sizeof to, &to };
	CLIENT *cl = clnt_tli_create(fd, nc, &nb, prog, RPC_ONE, 0, 0);
	freenetconfigent(nc);
	if (cl == NULL)
		clnt_pcreateerror("clnt_tli_create");
	return cl;
}

static void *work(void *arg)
{
	struct worker *w = arg;
	char src[64];
	snprintf(src, sizeof src, "%s%x", prefix, w->index + 1);
	CLIENT *cl = connect_from(src);
	if (cl == NULL) {
		w->errors++;
		return NULL;
	}
	struct timeval retry = { 0, 200000 }, total = { 5, 0 };
	clnt_control(cl, CLSET_RETRY_TIMEOUT, (char *)&retry);
	struct packet a, r;
	memset(&a, 0, sizeof a);
	inet_pton(AF_INET6, src, a.local);
	while (!load_stop) {
		a.type = REQUEST_REQ;
		memset(a.i4addr, 0, 4);
		memset(&r, 0, sizeof r);
		if (clnt_call(cl, REQUEST, (xdrproc_t)xdr_packet, (char *)&a, (xdrproc_t)xdr_packet, (char *)&r, total) != RPC_SUCCESS ||
		    r.type != REQUEST_REP || !memcmp(r.i4addr, "\0\0\0\0", 4)) {
			w->errors++;
			continue;
		}
		w->calls++;
		a.type = RELEASE_REQ;
		memcpy(a.i4addr, r.i4addr, 4);
		if (clnt_call(cl, RELEASE, (xdrproc_t)xdr_packet, (char *)&a, (xdrproc_t)xdr_packet, (char *)&r, total) != RPC_SUCCESS ||
		    r.type != RELEASE_REP)
			w->errors++;
		else
			w->calls++;
	}
	clnt_destroy(cl);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 7) {
		fprintf(stderr, "usage: %s NETID PORT PROG THREADS SECONDS SRC_PREFIX\n", argv[0]);
		return 2;
	}
	netid = argv[1];
	port = atoi(argv[2]);
	prog = strtoul(argv[3], NULL, 0);
	int n = atoi(argv[4]);
	double seconds = atof(argv[5]);
	prefix = argv[6];
	return run_load(n, seconds, work);
}
