/* The server half every rpcgen-built DSTM peer shares (the test server and the bench's in-memory server):
 * version 1 served on [::1] through svc_tli_create, version 2's procedures stubbed because rpcgen -m emits its
 * dispatcher too but these peers never register it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include "dstm.h"
#include "dstm_serve.h"

void rpc_1(struct svc_req *, SVCXPRT *);

dstm_reply *request_2_svc(struct packet *a, struct svc_req *r) { (void)a; (void)r; return NULL; }
dstm_reply *release_2_svc(struct packet *a, struct svc_req *r) { (void)a; (void)r; return NULL; }
dstm_bindings_reply *bindings_2_svc(dstm_bindings_args *a, struct svc_req *r) { (void)a; (void)r; return NULL; }
dstm_list_reply *list_2_svc(dstm_list_args *a, struct svc_req *r) { (void)a; (void)r; return NULL; }
dstm_reply *revoke_2_svc(dstm_admin_args *a, struct svc_req *r) { (void)a; (void)r; return NULL; }
dstm_reply *allocate_2_svc(dstm_admin_args *a, struct svc_req *r) { (void)a; (void)r; return NULL; }

int dstm_serve(const char *netid, int type, u_long prog)
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

