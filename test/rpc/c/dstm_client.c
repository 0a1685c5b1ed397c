/* An rpcgen client of xdr/dstm.x version 1: `dstm_client NETID HOST PORT PROG COUNT [sys]` calls REQUEST and
 * RELEASE COUNT times each with the packets the test expects (with libtirpc's default AUTH_SYS credential if "sys"
 * is given), prints every reply, then asks for version 9 and procedure 99 to show how libtirpc reports PROG_MISMATCH
 * and PROC_UNAVAIL. Exit status 0 when every call succeeded. */
#include <stdlib.h>
#include "dstm_peer.h"

int main(int argc, char **argv)
{
	if (argc != 6 && argc != 7) {
		fprintf(stderr, "usage: %s NETID HOST PORT PROG COUNT [sys]\n", argv[0]);
		return 2;
	}
	const char *netid = argv[1], *host = argv[2];
	int port = atoi(argv[3]), count = atoi(argv[5]);
	u_long prog = strtoul(argv[4], NULL, 0);
	CLIENT *cl = dstm_client(netid, host, port, prog, RPC_ONE);
	if (cl == NULL)
		return 1;
	struct timeval tv = { 5, 0 };
	clnt_control(cl, CLSET_TIMEOUT, (char *)&tv);
	if (argc == 7 && strcmp(argv[6], "sys") == 0) {
		auth_destroy(cl->cl_auth);
		cl->cl_auth = authsys_create_default();
	}
	int failed = 0;
	for (int i = 0; i < count; i++) {
		struct packet a;
		memset(&a, 0, sizeof a);
		a.type = REQUEST_REQ;
		for (int k = 0; k < 16; k++) {
			a.local[k] = (char)(0xfe + k + i);
			a.tep6[k] = (char)(0x20 + k * 3 + i);
		}
		for (int k = 0; k < 4; k++) {
			a.mask[k] = (char)(0xff - k);
			a.i4addr[k] = (char)(10 + k + i);
			a.tep4[k] = (char)(192 + k);
		}
		a.starts = 1000 + i;
		a.extend = 3600;
		a.keep = 0xfffffffe;
		a.ends = 7;
		struct packet *r = request_1(&a, cl);
		if (r == NULL) {
			clnt_perror(cl, "REQUEST");
			failed = 1;
			continue;
		}
		dstm_print("REQUEST", r);
		a.type = RELEASE_REQ;
		r = release_1(&a, cl);
		if (r == NULL) {
			clnt_perror(cl, "RELEASE");
			failed = 1;
			continue;
		}
		dstm_print("RELEASE", r);
	}
	/* Errors as libtirpc reports them. */
	CLIENT *v9 = dstm_client(netid, host, port, prog, 9);
	if (v9 && clnt_call(v9, NULLPROC, (xdrproc_t)xdr_void, NULL, (xdrproc_t)xdr_void, NULL, tv) != RPC_SUCCESS) {
		struct rpc_err e;
		clnt_geterr(v9, &e);
		printf("VERSION9 %s low=%lu high=%lu\n", clnt_sperrno(e.re_status), (u_long)e.re_vers.low, (u_long)e.re_vers.high);
	}
	if (clnt_call(cl, 99, (xdrproc_t)xdr_void, NULL, (xdrproc_t)xdr_void, NULL, tv) != RPC_SUCCESS) {
		struct rpc_err e;
		clnt_geterr(cl, &e);
		printf("PROC99 %s\n", clnt_sperrno(e.re_status));
	}
	return failed;
}
