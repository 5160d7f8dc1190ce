/* dedup: a ring of keys in arrival order and a linear-probing index into it.
 * Evicting the oldest key deletes it from the index by backward shifting, so
 * the index never fills with tombstones. */
#include "dedup.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct key {
  uint64_t a, b;
} key;

struct dedup {
  size_t cap;  /* window */
  key *ring;   /* cap entries */
  size_t head; /* oldest */
  size_t count;
  uint32_t *index; /* ring position + 1; 0 = empty */
  size_t mask;
};

static uint64_t mix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

static uint64_t hash(const char *s, uint64_t h) {
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h;
}

static key make_key(const char *source, const char *id) {
  /* two independent 64-bit hashes of "source\0id" */
  uint64_t a = hash(id, hash(source ? source : "", 1469598103934665603ULL) * 31 + 1);
  uint64_t b = hash(id, hash(source ? source : "", 0x9e3779b97f4a7c15ULL) ^ 0x5bd1e995);
  return (key){mix(a), mix(b ^ 0x2545f4914f6cdd1dULL)};
}

dedup_t *dedup_new(size_t window) {
  if (window == 0 || window > UINT32_MAX / 2) return NULL;
  dedup_t *d = calloc(1, sizeof *d);
  if (!d) return NULL;
  size_t slots = 16;
  while (slots < window * 2) slots *= 2; /* load factor <= 0.5 */
  d->cap = window;
  d->mask = slots - 1;
  d->ring = malloc(window * sizeof *d->ring);
  d->index = calloc(slots, sizeof *d->index);
  if (!d->ring || !d->index) {
    dedup_free(d);
    return NULL;
  }
  return d;
}

void dedup_free(dedup_t *d) {
  if (!d) return;
  free(d->ring);
  free(d->index);
  free(d);
}

static size_t find(const dedup_t *d, key k) {
  size_t i = (size_t)k.a & d->mask;
  while (d->index[i]) {
    const key *e = &d->ring[d->index[i] - 1];
    if (e->a == k.a && e->b == k.b) return i;
    i = (i + 1) & d->mask;
  }
  return SIZE_MAX;
}

int dedup_has(const dedup_t *d, const char *source, const char *id) {
  return d && find(d, make_key(source, id)) != SIZE_MAX;
}

static void remove_slot(dedup_t *d, size_t i) {
  /* backward-shift deletion for linear probing */
  size_t j = i;
  for (;;) {
    d->index[i] = 0;
    for (;;) {
      j = (j + 1) & d->mask;
      if (!d->index[j]) return;
      size_t home = (size_t)d->ring[d->index[j] - 1].a & d->mask;
      /* move j back to i unless its home lies cyclically in (i, j] */
      if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) break;
    }
    d->index[i] = d->index[j];
    i = j;
  }
}

void dedup_add(dedup_t *d, const char *source, const char *id) {
  if (!d) return;
  key k = make_key(source, id);
  if (find(d, k) != SIZE_MAX) return;
  size_t pos;
  if (d->count == d->cap) { /* forget the oldest */
    pos = d->head;
    size_t slot = find(d, d->ring[pos]);
    if (slot != SIZE_MAX) remove_slot(d, slot);
    d->head = (d->head + 1) % d->cap;
  } else {
    pos = (d->head + d->count) % d->cap;
    d->count++;
  }
  d->ring[pos] = k;
  size_t i = (size_t)k.a & d->mask;
  while (d->index[i]) i = (i + 1) & d->mask;
  d->index[i] = (uint32_t)pos + 1;
}

size_t dedup_size(const dedup_t *d) {
  return d ? d->count : 0;
}

size_t dedup_bytes(const dedup_t *d) {
  return d ? sizeof *d + d->cap * sizeof *d->ring + (d->mask + 1) * sizeof *d->index : 0;
}
