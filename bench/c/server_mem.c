/* The baseline of bench/server.bench.ts: the DSTM server as rpcgen would have it, built from xdr/dstm.x (rpcgen -m
 * dispatcher) with a hand-written in-memory allocator and no durability: a hash table of bindings keyed by the
 * node's IPv6 address, and a FIFO ring of free IPv4 addresses. It applies the same rules as dstm server to version 1
 * calls: local must be the caller, REQUEST is idempotent per node, RELEASE frees only the caller's binding.
 * `server_mem PROG POOL_BASE POOL_BITS` serves udp6 and tcp6 on [::1], prints "ready UDP_PORT TCP_PORT". */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include "dstm.h"
#include "dstm_serve.h"


#define LEASE 3600

struct slot {
	unsigned char ip6[16];
	uint32_t ip4;
	int used; /* 0 empty, 1 bound, 2 deleted (tombstone) */
};

static struct slot *table;
static size_t table_size; /* power of two */
static uint32_t *ring;
static size_t ring_size, ring_head, ring_count;

static size_t hash6(const unsigned char *a)
{
	uint64_t h = 1469598103934665603ULL;
	for (int i = 0; i < 16; i++)
		h = (h ^ a[i]) * 1099511628211ULL;
	return (size_t)h;
}

/* The slot holding ip6, or the first free slot for it when absent (*found = 0). */
static struct slot *lookup(const unsigned char *ip6, int *found)
{
	struct slot *tomb = NULL;
	for (size_t i = hash6(ip6) & (table_size - 1);; i = (i + 1) & (table_size - 1)) {
		struct slot *s = &table[i];
		if (s->used == 0) {
			*found = 0;
			return tomb ? tomb : s;
		}
		if (s->used == 2) {
			if (!tomb)
				tomb = s;
		} else if (memcmp(s->ip6, ip6, 16) == 0) {
			*found = 1;
			return s;
		}
	}
}

static int caller_is(struct svc_req *rq, const char *local)
{
	struct netbuf *nb = svc_getrpccaller(rq->rq_xprt);
	const struct sockaddr_in6 *sa = (const struct sockaddr_in6 *)nb->buf;
	return sa->sin6_family == AF_INET6 && memcmp(&sa->sin6_addr, local, 16) == 0;
}

static void fill(struct packet *r, const struct packet *a, int type, uint32_t ip4, u_int keep)
{
	memset(r, 0, sizeof *r);
	r->type = type;
	memcpy(r->local, a->local, 16);
	uint32_t n = htonl(ip4);
	memcpy(r->i4addr, &n, 4);
	if (ip4 && keep)
		memset(r->mask, 0xff, 4);
	r->starts = (u_int)time(NULL);
	r->ends = r->starts + keep;
	r->keep = keep;
	r->extend = keep / 2;
}

struct packet *request_1_svc(struct packet *a, struct svc_req *rq)
{
	static struct packet r;
	if (a->type != REQUEST_REQ || !caller_is(rq, a->local)) {
		svcerr_weakauth(rq->rq_xprt);
		return NULL;
	}
	int found;
	struct slot *s = lookup((unsigned char *)a->local, &found);
	if (!found) {
		if (ring_count == 0) {
			fill(&r, a, REQUEST_REP, 0, 0);
			return &r;
		}
		memcpy(s->ip6, a->local, 16);
		s->ip4 = ring[ring_head];
		ring_head = (ring_head + 1) % ring_size;
		ring_count--;
		s->used = 1;
	}
	fill(&r, a, REQUEST_REP, s->ip4, LEASE);
	return &r;
}

struct packet *release_1_svc(struct packet *a, struct svc_req *rq)
{
	static struct packet r;
	if (a->type != RELEASE_REQ || !caller_is(rq, a->local)) {
		svcerr_weakauth(rq->rq_xprt);
		return NULL;
	}
	int found;
	struct slot *s = lookup((unsigned char *)a->local, &found);
	uint32_t want;
	memcpy(&want, a->i4addr, 4);
	want = ntohl(want);
	if (!found || (want && want != s->ip4)) {
		fill(&r, a, RELEASE_REP, 0, 0);
		return &r;
	}
	s->used = 2;
	ring[(ring_head + ring_count) % ring_size] = s->ip4;
	ring_count++;
	fill(&r, a, RELEASE_REP, s->ip4, 0);
	return &r;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s PROG POOL_BASE POOL_BITS\n", argv[0]);
		return 2;
	}
	u_long prog = strtoul(argv[1], NULL, 0);
	struct in_addr base;
	inet_pton(AF_INET, argv[2], &base);
	int bits = atoi(argv[3]);
	ring_size = (size_t)1 << bits;
	ring = malloc(ring_size * sizeof *ring);
	for (size_t i = 1; i + 1 < ring_size; i++) /* skip network and broadcast, as dstm server does */
		ring[ring_count++] = ntohl(base.s_addr) + (uint32_t)i;
	table_size = ring_size * 2;
	table = calloc(table_size, sizeof *table);
	int udp = dstm_serve("udp6", SOCK_DGRAM, prog), tcp = dstm_serve("tcp6", SOCK_STREAM, prog);
	printf("ready %d %d\n", udp, tcp);
	fflush(stdout);
	svc_run();
	return 1;
}
