/* An rpcgen server of xdr/dstm.x version 1 (rpcgen -m dispatcher, this main) on [::1] over udp6 and tcp6:
 * `dstm_server PROG` binds ephemeral ports, prints "ready UDP_PORT TCP_PORT", and serves until killed. REQUEST and
 * RELEASE apply dstm_transform; nothing is registered with rpcbind. */
#include <stdlib.h>
#include <unistd.h>
#include <netinet/in.h>
#include "dstm_peer.h"
#include "dstm_serve.h"


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

int main(int argc, char **argv)
{
	u_long prog = argc > 1 ? strtoul(argv[1], NULL, 0) : RPC;
	int udp = dstm_serve("udp6", SOCK_DGRAM, prog), tcp = dstm_serve("tcp6", SOCK_STREAM, prog);
	printf("ready %d %d\n", udp, tcp);
	fflush(stdout);
	svc_run();
	return 1;
}
