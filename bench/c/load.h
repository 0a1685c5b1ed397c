/* The harness both C load generators share: THREADS workers call back to back until `load_stop` is set after
 * SECONDS, then the totals are printed as "calls N errors E seconds S", the line the benches parse. */
#ifndef DSTM_LOAD_H
#define DSTM_LOAD_H
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct worker {
	pthread_t t;
	int index;
	long calls, errors;
};

static volatile int load_stop;

static int run_load(int threads, double seconds, void *(*work)(void *))
{
	struct worker *ws = calloc(threads, sizeof *ws);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < threads; i++) {
		ws[i].index = i;
		pthread_create(&ws[i].t, NULL, work, &ws[i]);
	}
	struct timespec d = { (time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9) };
	nanosleep(&d, NULL);
	load_stop = 1;
	long calls = 0, errors = 0;
	for (int i = 0; i < threads; i++) {
		pthread_join(ws[i].t, NULL);
		calls += ws[i].calls;
		errors += ws[i].errors;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("calls %ld errors %ld seconds %.3f\n", calls, errors, (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	free(ws);
	return 0;
}
#endif
