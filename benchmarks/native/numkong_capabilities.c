/* Preloaded into a benchmark (LD_PRELOAD) to run USearch's distance kernels as on an older CPU:
 * NumKong's nk_capabilities() answers with what the CPU has, masked by the environment's
 * NK_CAPABILITIES_MASK. USearch picks its kernels from that answer. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>

typedef uint64_t (*capabilities_fn)(void);

uint64_t nk_capabilities(void) {
    capabilities_fn found = (capabilities_fn)dlsym(RTLD_NEXT, "nk_capabilities");
    uint64_t capabilities = found ? found() : 1;
    const char *mask = getenv("NK_CAPABILITIES_MASK");
    return mask ? capabilities & strtoull(mask, NULL, 0) : capabilities;
}
