/* Load generator of bench/rpc.bench.ts: the same load for our server and the rpcgen C server.
 * `rpc_load NETID HOST PORT PROG PROC THREADS SECONDS`: THREADS callers, each with its own libtirpc client handle,
 * call PROC (0 = NULL, 1 = REQUEST with an Annex B packet) back to back for SECONDS, then it prints
 * "calls N errors E seconds S". */
#include <stdlib.h>
#include <time.h>
#include "dstm_peer.h"
#include "load.h"

static const char *netid, *host;
static int port, proc;
static u_long prog;

static void *work(void *arg)
{
	struct worker *w = arg;
	CLIENT *cl = dstm_client(netid, host, port, prog, RPC_ONE);
	if (cl == NULL) {
		w->errors++;
		return NULL;
	}
	struct timeval retry = { 0, 200000 }, total = { 2, 0 };
	clnt_control(cl, CLSET_RETRY_TIMEOUT, (char *)&retry);
	struct packet a, r;
	memset(&a, 0, sizeof a);
	a.type = REQUEST_REQ;
	a.starts = 1000;
	a.extend = 3600;
	while (!load_stop) {
		enum clnt_stat s;
		if (proc == 0)
			s = clnt_call(cl, NULLPROC, (xdrproc_t)xdr_void, NULL, (xdrproc_t)xdr_void, NULL, total);
		else
			s = clnt_call(cl, REQUEST, (xdrproc_t)xdr_packet, (char *)&a, (xdrproc_t)xdr_packet, (char *)&r, total);
		if (s == RPC_SUCCESS)
			w->calls++;
		else
			w->errors++;
	}
	clnt_destroy(cl);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 8) {
		fprintf(stderr, "usage: %s NETID HOST PORT PROG PROC THREADS SECONDS\n", argv[0]);
		return 2;
	}
	netid = argv[1];
	host = argv[2];
	port = atoi(argv[3]);
	prog = strtoul(argv[4], NULL, 0);
	proc = atoi(argv[5]);
	int n = atoi(argv[6]);
	double seconds = atof(argv[7]);
	return run_load(n, seconds, work);
}
