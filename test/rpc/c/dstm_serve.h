/* dstm_serve(NETID, SOCK_DGRAM or SOCK_STREAM, PROG): serve version 1 of PROG on [::1] over NETID on an ephemeral
 * port (returned); see dstm_serve.c. */
#ifndef DSTM_SERVE_H
#define DSTM_SERVE_H
#include <rpc/rpc.h>
int dstm_serve(const char *netid, int type, u_long prog);
#endif
