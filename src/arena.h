/* arena: bump allocation for data that dies all at once (a delivery's parsed
 * JSON tree). Freed arenas keep their first block in a small pool, so a steady
 * stream of requests does not go back to malloc for each one. */
#ifndef LUAHOOK_ARENA_H
#define LUAHOOK_ARENA_H

#include <stddef.h>

typedef struct arena arena_t;

arena_t *arena_new(void);
/* 16-byte aligned; NULL when out of memory. */
void *arena_alloc(arena_t *a, size_t n);
void arena_free(arena_t *a);
/* Frees the pooled blocks (at exit, so leak checkers see a clean heap). */
void arena_drain_pool(void);

#endif
