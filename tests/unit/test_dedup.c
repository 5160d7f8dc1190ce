/* Unit tests for dedup: membership, eviction order across wrap-around, and the
 * index staying consistent under many evictions (checked against a model). */
#include "check.h"
#include "dedup.h"

#include <stdint.h>

int main(void) {
  CHECK(dedup_new(0) == NULL);
  CHECK(!dedup_has(NULL, "s", "x")); /* off: nothing is a duplicate */

  dedup_t *d = dedup_new(3);
  CHECK(d != NULL);
  dedup_add(d, "s", "a");
  dedup_add(d, "s", "b");
  CHECK(dedup_has(d, "s", "a") && dedup_has(d, "s", "b"));
  CHECK(!dedup_has(d, "t", "a")); /* the source is part of the key */
  CHECK(!dedup_has(d, NULL, "c"));
  dedup_add(d, "s", "a"); /* already there: no second entry */
  CHECK_INT(dedup_size(d), 2);
  dedup_add(d, "s", "c");
  dedup_add(d, "s", "d"); /* evicts a */
  CHECK(!dedup_has(d, "s", "a"));
  CHECK(dedup_has(d, "s", "b") && dedup_has(d, "s", "c") && dedup_has(d, "s", "d"));
  dedup_free(d);

  /* a long run: exactly the last W ids are members */
  enum { W = 1000, N = 50000 };
  d = dedup_new(W);
  char id[32];
  for (int i = 0; i < N; i++) {
    snprintf(id, sizeof id, "ev-%d", i);
    dedup_add(d, "/subscriptions/x", id);
    if (i % 997 == 0) {
      for (int k = i - W - 5; k <= i; k++) {
        if (k < 0) continue;
        snprintf(id, sizeof id, "ev-%d", k);
        int want = k > i - W;
        if (dedup_has(d, "/subscriptions/x", id) != want) {
          fprintf(stderr, "after %d inserts, ev-%d member=%d wanted %d\n", i + 1, k,
                  !want, want);
          return 1;
        }
      }
    }
  }
  CHECK_INT(dedup_size(d), W);
  CHECK(dedup_bytes(d) < (size_t)W * 40);
  dedup_free(d);
  puts("test_dedup: ok");
  return 0;
}
