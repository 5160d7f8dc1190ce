/* arena: a list of blocks; allocations bump through the newest one. */
#include "arena.h"

#include <stdint.h>
#include <stdlib.h>

#define BLOCK    (32 * 1024)
#define POOL_MAX 16
#define ALIGN(n) (((n) + 15) & ~(size_t)15)

typedef struct block {
  struct block *prev;
  size_t used, cap;
  _Alignas(16) unsigned char data[];
} block;

struct arena {
  block *top;
};

static block *pool[POOL_MAX];
static int npool;

static block *block_new(size_t cap) {
  block *b = malloc(sizeof *b + cap);
  if (!b) return NULL;
  b->prev = NULL;
  b->used = 0;
  b->cap = cap;
  return b;
}

arena_t *arena_new(void) {
  block *b = npool ? pool[--npool] : block_new(BLOCK - sizeof(block));
  if (!b) return NULL;
  b->prev = NULL;
  /* the arena header lives at the start of its first block */
  arena_t *a = (arena_t *)b->data;
  b->used = ALIGN(sizeof *a);
  a->top = b;
  return a;
}

void *arena_alloc(arena_t *a, size_t n) {
  n = ALIGN(n ? n : 1);
  block *b = a->top;
  if (b->cap - b->used < n) {
    size_t cap = n > (BLOCK - sizeof(block)) / 4 ? n : BLOCK - sizeof(block);
    block *nb = block_new(cap);
    if (!nb) return NULL;
    if (cap == n && b->cap - b->used >= 256) {
      /* a big one-off: slot it behind the current block, which keeps serving */
      nb->prev = b->prev;
      b->prev = nb;
      nb->used = n;
      return nb->data;
    }
    nb->prev = b;
    a->top = nb;
    b = nb;
  }
  void *p = b->data + b->used;
  b->used += n;
  return p;
}

void arena_free(arena_t *a) {
  if (!a) return;
  block *first = NULL;
  for (block *b = a->top, *prev; b; b = prev) {
    prev = b->prev;
    if ((unsigned char *)a == b->data)
      first = b;
    else
      free(b);
  }
  if (npool < POOL_MAX)
    pool[npool++] = first;
  else
    free(first);
}

void arena_drain_pool(void) {
  while (npool) free(pool[--npool]);
}
