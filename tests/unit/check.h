/*
 * check.h: the unit-test harness. A test file defines static void test_xxx(void) functions,
 * lists them in main() with RUN(test_xxx), and returns check_summary(). CHECK records a
 * failure with file and line and goes on; REQUIRE stops the current test.
 */
#ifndef KVC_TESTS_CHECK_H
#define KVC_TESTS_CHECK_H

#include <stdio.h>

static int check_failed_now;
static int check_passed, check_failed;

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
			check_failed_now = 1;                                                      \
		}                                                                                  \
	} while (0)

#define REQUIRE(cond)                                                                              \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); \
			check_failed_now = 1;                                                      \
			return;                                                                    \
		}                                                                                  \
	} while (0)

#define RUN(fn)                                                                                    \
	do {                                                                                       \
		check_failed_now = 0;                                                              \
		fn();                                                                              \
		if (check_failed_now) {                                                            \
			check_failed++;                                                            \
			fprintf(stderr, "FAIL %s\n", #fn);                                         \
		} else {                                                                           \
			check_passed++;                                                            \
			printf("ok   %s\n", #fn);                                                  \
		}                                                                                  \
	} while (0)

static inline int check_summary(void)
{
	printf("%d passed, %d failed\n", check_passed, check_failed);
	return check_failed ? 1 : 0;
}

#endif
