/* An rpcgen server of xdr/dstm.x version 1 (rpcgen -m dispatcher, this main) on [::1] over udp6 and tcp6:
 * `dstm_server PROG` binds ephemeral ports, prints "ready UDP_PORT TCP_PORT", and serves until killed. REQUEST and
 * RELEASE apply dstm_transform; nothing is registered with rpcbind. */
#include <stdlib.h>
#include <unistd.h>
#include <netinet/in.h>
#include "dstm_peer.h"

void rpc_1(struct svc_req *, SVCXPRT *);

struct packet *request_1_svc(struct packet *a, struct svc_req *rq)
{
	static struct packet r;
	(void)rq;
	dstm_transform(a, &r);
	return &r;
}

struct packet *release_1_svc(struct packet *a, struct svc_req *rq)
{
	return request_1_svc(a, rq);
}

/* rpcgen -m also emits the dispatcher of version 2, which this peer does not serve (it is never registered). */
dstm_reply *request_2_svc(struct packet *a, struct svc_req *r) { (void)a; (void)r; return NULL; }
dstm_reply *release_2_svc(struct packet *a, struct svc_req *r) { (void)a; (void)r; return NULL; }
dstm_bindings_reply *bindings_2_svc(dstm_bindings_args *a, struct svc_req *r) { (void)a; (void)r; return NULL; }
dstm_list_reply *list_2_svc(dstm_list_args *a, struct svc_req *r) { (void)a; (void)r; return NULL; }
dstm_reply *revoke_2_svc(dstm_admin_args *a, struct svc_req *r) { (void)a; (void)r; return NULL; }
dstm_reply *allocate_2_svc(dstm_admin_args *a, struct svc_req *r) { (void)a; (void)r; return NULL; }

static int serve(const char *netid, int type, u_long prog)
{
	struct sockaddr_in6 sa;
	socklen_t len = sizeof sa;
	int one = 1, fd = socket(AF_INET6, type, 0);
	memset(&sa, 0, sizeof sa);
	sa.sin6_family = AF_INET6;
	sa.sin6_addr = in6addr_loopback;
	setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || (type == SOCK_STREAM && listen(fd, 128) < 0)) {
		perror("bind/listen");
		exit(1);
	}
	getsockname(fd, (struct sockaddr *)&sa, &len);
	struct netconfig *nc = getnetconfigent(netid);
	SVCXPRT *x = svc_tli_create(fd, nc, NULL, 0, 0);
	if (x == NULL || !svc_reg(x, prog, RPC_ONE, rpc_1, NULL)) {
		fprintf(stderr, "cannot serve %s\n", netid);
		exit(1);
	}
	freenetconfigent(nc);
	return ntohs(sa.sin6_port);
}

int main(int argc, char **argv)
{
	u_long prog = argc > 1 ? strtoul(argv[1], NULL, 0) : RPC;
	int udp = serve("udp6", SOCK_DGRAM, prog), tcp = serve("tcp6", SOCK_STREAM, prog);
	printf("ready %d %d\n", udp, tcp);
	fflush(stdout);
	svc_run();
	return 1;
}
