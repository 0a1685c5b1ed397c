// io_uring without liburing (not a build dependency): the three system calls and the ring layout of
// linux/io_uring.h. See uring.h for why.
#define _GNU_SOURCE
#include "uring.h"

#include <errno.h>
#include <linux/fs.h>
#include <linux/io_uring.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

static void *map_ring(int fd, size_t len, off_t what) {
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, what);
  return p == MAP_FAILED ? NULL : p;
}

/** Whether the kernel has IORING_OP_READ and IORING_OP_WRITE (5.6 on; before, every operation would fail). */
static int has_read_write(int fd) {
  const unsigned nops = IORING_OP_WRITE + 1;
  struct io_uring_probe *p = calloc(1, sizeof *p + nops * sizeof(struct io_uring_probe_op));
  if (!p) return 0;
  int ok = syscall(__NR_io_uring_register, fd, IORING_REGISTER_PROBE, p, nops) >= 0 && p->ops_len > IORING_OP_WRITE &&
           (p->ops[IORING_OP_READ].flags & IO_URING_OP_SUPPORTED) && (p->ops[IORING_OP_WRITE].flags & IO_URING_OP_SUPPORTED);
  free(p);
  return ok;
}

int uring_init(uring *u, unsigned entries) {
  memset(u, 0, sizeof *u);
  u->fd = -1;
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  int fd = (int)syscall(__NR_io_uring_setup, entries, &p);
  if (fd < 0) return -errno;
  if (!has_read_write(fd)) {
    close(fd);
    return -EOPNOTSUPP;
  }
  u->fd = fd;
  u->entries = p.sq_entries;
  u->sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  u->cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  int single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
  if (single && u->cq_len > u->sq_len) u->sq_len = u->cq_len;
  u->sq_map = map_ring(fd, u->sq_len, IORING_OFF_SQ_RING);
  u->cq_map = single ? u->sq_map : map_ring(fd, u->cq_len, IORING_OFF_CQ_RING);
  u->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
  u->sqes = map_ring(fd, u->sqes_len, IORING_OFF_SQES);
  if (!u->sq_map || !u->cq_map || !u->sqes) {
    int err = errno;
    uring_free(u);
    return -err;
  }
  uint8_t *sq = u->sq_map, *cq = u->cq_map;
  u->sq_tail = (unsigned *)(sq + p.sq_off.tail);
  u->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
  u->sq_array = (unsigned *)(sq + p.sq_off.array);
  u->cq_head = (unsigned *)(cq + p.cq_off.head);
  u->cq_tail = (unsigned *)(cq + p.cq_off.tail);
  u->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
  u->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
  return 0;
}

void uring_free(uring *u) {
  if (u->sqes) munmap(u->sqes, u->sqes_len);
  if (u->cq_map && u->cq_map != u->sq_map) munmap(u->cq_map, u->cq_len);
  if (u->sq_map) munmap(u->sq_map, u->sq_len);
  if (u->fd >= 0) close(u->fd);
  memset(u, 0, sizeof *u);
  u->fd = -1;
}

int uring_batch(uring *u, int fd, int write, uint8_t *const *bufs, const uint32_t *lens, unsigned n, int32_t *res) {
  if (u->fd < 0 || n > u->entries) return -EINVAL;
  unsigned tail = *u->sq_tail;  // only this thread writes the tail
  for (unsigned i = 0; i < n; i++) {
    unsigned at = (tail + i) & *u->sq_mask;
    struct io_uring_sqe *s = &u->sqes[at];
    memset(s, 0, sizeof *s);
    s->opcode = write ? IORING_OP_WRITE : IORING_OP_READ;
    s->fd = fd;
    s->addr = (uint64_t)(uintptr_t)bufs[i];
    s->len = lens[i];
    s->rw_flags = write ? 0 : RWF_NOWAIT;  // a read must not wait for a packet: the device was readable
    s->user_data = i;
    u->sq_array[at] = at;
  }
  for (unsigned i = 0; i < n; i++) res[i] = -EIO;  // what an operation the ring lost reports
  atomic_store_explicit((_Atomic unsigned *)u->sq_tail, tail + n, memory_order_release);
  unsigned submitted = 0, done = 0;
  while (done < n) {
    // Reads with RWF_NOWAIT and TUN writes complete inline: one call submits the batch and finds every completion.
    int rc = (int)syscall(__NR_io_uring_enter, u->fd, n - submitted, n - done, IORING_ENTER_GETEVENTS, NULL, 0);
    if (rc < 0) {
      if (errno == EINTR) continue;
      if (submitted > 0) return (int)done;  // some ran: the caller counts the rest as lost and drops the ring
      int err = errno;
      atomic_store_explicit((_Atomic unsigned *)u->sq_tail, tail, memory_order_release);  // none was taken
      return -err;
    }
    submitted += (unsigned)rc;
    unsigned head = *u->cq_head;
    unsigned ctail = atomic_load_explicit((_Atomic unsigned *)u->cq_tail, memory_order_acquire);
    for (; head != ctail; head++) {
      struct io_uring_cqe *c = &u->cqes[head & *u->cq_mask];
      if (c->user_data < n) res[c->user_data] = c->res;
      done++;
    }
    atomic_store_explicit((_Atomic unsigned *)u->cq_head, head, memory_order_release);
  }
  return (int)done;
}
