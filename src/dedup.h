/* dedup: the window of events whose handler succeeded, so a redelivery of them
 * is skipped. Count-based: it remembers the last N successes (oldest forgotten
 * first), each as a 128-bit hash of source + id, in O(1) per lookup and insert.
 * Memory: 16 bytes per remembered event plus 8 to 16 bytes of index (2.7 MB for
 * 100000). */
#ifndef LUAHOOK_DEDUP_H
#define LUAHOOK_DEDUP_H

#include <stddef.h>

typedef struct dedup dedup_t;

dedup_t *dedup_new(size_t window); /* NULL for window 0 (off) or no memory */
void dedup_free(dedup_t *d);
int dedup_has(const dedup_t *d, const char *source, const char *id);
void dedup_add(dedup_t *d, const char *source, const char *id);
size_t dedup_size(const dedup_t *d);
size_t dedup_bytes(const dedup_t *d);

#endif
