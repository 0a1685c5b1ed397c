/* Batched reads and writes of one fd through io_uring (native/uring.c), for the TUN device: its contract is one
 * packet per read() or write(), and on this kind of machine the system call around each one costs more than the
 * kernel's work on a small packet. A batch of n operations is one io_uring_enter instead of n system calls.
 * Without io_uring (old kernel, kernel.io_uring_disabled, a seccomp filter) uring_init fails and the caller keeps
 * its read()/write() loop. */
#ifndef DSTM_URING_H
#define DSTM_URING_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
  int fd; /* the ring's fd; -1: no ring */
  unsigned entries;
  unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
  struct io_uring_sqe *sqes;
  struct io_uring_cqe *cqes;
  void *sq_map, *cq_map;
  size_t sq_len, cq_len, sqes_len;
} uring;

/** Sets up a ring for batches of up to `entries` operations; 0, or -errno (the ring is then unusable: fd -1). */
int uring_init(uring *u, unsigned entries);
void uring_free(uring *u);

/**
 * Runs n reads (write = 0, each with RWF_NOWAIT: an empty device answers -EAGAIN at once) or writes of fd, operation
 * i on bufs[i] .. + lens[i], n <= entries; res[i] gets its result (bytes, or -errno; -EIO: lost with the ring).
 * Returns n; fewer when the ring failed midway (then drop it); -errno when it failed before running any (nothing
 * happened: fall back).
 */
int uring_batch(uring *u, int fd, int write, uint8_t *const *bufs, const uint32_t *lens, unsigned n, int32_t *res);
#endif
