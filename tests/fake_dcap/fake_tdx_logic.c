/*
 * A stand-in for Intel's libsgx_tdx_logic.so.1, for tests on machines without TDX.
 *
 * It exports the tee_att_* symbols with the real prototypes
 * (QuoteGeneration/quote_wrapper/tdx_quote/inc/td_ql_wrapper.h) and behaves like the library from
 * the caller's side (td_ql_wrapper.cpp): tee_att_create_context only allocates; the init_quote
 * size query (p_pub_key_id NULL) answers 32 and a pub key id size other than 32 is
 * INVALID_PARAMETER; "no key until init" (get_quote_size/get_quote answer
 * TEE_ATT_ATT_KEY_NOT_INITIALIZED on a context whose key was not initialised); a report_size other
 * than 1024 or a NULL report is INVALID_PARAMETER; a buffer smaller than the quote is
 * INVALID_PARAMETER; an unknown or freed context is INVALID_PARAMETER.
 * The quote it serves is set by the test (fake_tdx_set_quote: e.g. the simulated TDQE's quote of the
 * TDREPORT the test will send, or a real vector); with fake_tdx_expect_report set, any other
 * report is TEE_ATT_INVALID_REPORT (the TDQE verifies the report it quotes). A process the test
 * cannot reach (the CLI) reads both at tee_att_create_context from the files named by
 * $FAKE_TDX_QUOTE and $FAKE_TDX_EXPECT_REPORT instead.
 * init_quote "loads the TDQE": with FAKE_TDX_ENCLAVE_DIR set and no libsgx_tdqe.signed.so.1 in it
 * (or a tee_att_set_path(TEE_ATT_TDQE) file that does not exist), TEE_ATT_ENCLAVE_LOAD_ERROR.
 * tee_att_get_qpl_handle dlopens the tee_att_set_path(TEE_ATT_QPL) path, else $FAKE_TDX_QPL, else
 * libdcap_quoteprov.so.1 (TEE_ATT_PLATFORM_LIB_UNAVAILABLE if it cannot).
 *
 * Test controls: fake_tdx_set_status(fn, status) forces a status for "create", "init", "size",
 * "quote", "platform", "path", "free"; fake_tdx_calls(fn); fake_tdx_live_contexts();
 * fake_tdx_drop_keys() (every context's key uninitialised); fake_tdx_last_refresh();
 * fake_tdx_set_size(n) (get_quote_size answers n until reset; else the quote's length +
 * fake_tdx_set_pad(n));
 * fake_tdx_last_quote_size(); fake_tdx_last_report(out1024); fake_tdx_max_inflight() (most
 * callers inside tee_att_get_quote at once); fake_tdx_context_overlaps() (times two threads were
 * inside tee_att_get_quote on the same context); fake_tdx_set_delay_us(n) (time spent in
 * tee_att_get_quote); fake_tdx_set_platform(...); fake_tdx_reset().
 * Build with -DFAKE_MINIMAL to leave out the optional tee_att_set_path, tee_att_get_qpl_handle and
 * tee_att_get_platform_info.
 */
#include <dlfcn.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef uint32_t tee_att_error_t;
#define TEE_ATT_SUCCESS 0x0000u
#define TEE_ATT_ERROR_INVALID_PARAMETER 0x11002u
#define TEE_ATT_PLATFORM_LIB_UNAVAILABLE 0x1100Eu
#define TEE_ATT_ATT_KEY_NOT_INITIALIZED 0x1100Fu
#define TEE_ATT_INVALID_REPORT 0x11015u
#define TEE_ATT_ENCLAVE_LOAD_ERROR 0x11016u
#define REPORT_SIZE 1024u
#define MAX_CONTEXTS 512
#define CTX_MAGIC 0x54445843u /* "TDXC" */

enum { F_CREATE, F_INIT, F_SIZE, F_QUOTE, F_PLATFORM, F_PATH, F_FREE, F_COUNT };
static const char *const k_names[F_COUNT] = {"create", "init", "size", "quote", "platform", "path", "free"};

typedef struct {
    uint32_t magic;
    int live;
    int key_ready;
    int inflight;
    char qpl_path[4096];
    char tdqe_path[4096];
} fake_ctx_t;

static fake_ctx_t g_ctx[MAX_CONTEXTS];
static int g_ctx_used;
static uint32_t g_forced[F_COUNT];
static uint32_t g_calls[F_COUNT];
static uint8_t *g_quote;
static uint32_t g_quote_len;
static uint32_t g_size_override;
static int g_size_set;
static uint32_t g_pad;
static uint8_t g_expect[REPORT_SIZE];
static int g_expect_set;
static uint8_t g_last_report[REPORT_SIZE];
static uint32_t g_last_quote_size;
static int g_last_refresh = -1;
static int g_inflight, g_max_inflight, g_overlaps;
static unsigned g_delay_us;
static uint8_t g_platform[36];

static int fn_index(const char *fn) {
    for (int i = 0; i < F_COUNT; i++)
        if (strcmp(fn, k_names[i]) == 0) return i;
    return -1;
}

int fake_tdx_set_status(const char *fn, uint32_t status) {
    int i = fn_index(fn);
    if (i < 0) return -1;
    g_forced[i] = status;
    return 0;
}
uint32_t fake_tdx_calls(const char *fn) {
    int i = fn_index(fn);
    return i < 0 ? 0xFFFFFFFFu : g_calls[i];
}
int fake_tdx_live_contexts(void) {
    int n = 0;
    for (int i = 0; i < g_ctx_used; i++) n += g_ctx[i].live;
    return n;
}
void fake_tdx_drop_keys(void) {
    for (int i = 0; i < g_ctx_used; i++) g_ctx[i].key_ready = 0;
}
int fake_tdx_last_refresh(void) { return g_last_refresh; }
int fake_tdx_set_quote(const uint8_t *quote, uint32_t len) {
    uint8_t *copy = malloc(len ? len : 1);
    if (copy == NULL) return -1;
    memcpy(copy, quote, len);
    free(g_quote);
    g_quote = copy;
    g_quote_len = len;
    return 0;
}
void fake_tdx_expect_report(const uint8_t *report) {
    g_expect_set = report != NULL;
    if (report != NULL) memcpy(g_expect, report, REPORT_SIZE);
}
void fake_tdx_set_size(uint32_t n) {
    g_size_override = n;
    g_size_set = 1;
}
void fake_tdx_set_pad(uint32_t n) { g_pad = n; }
uint32_t fake_tdx_last_quote_size(void) { return g_last_quote_size; }
void fake_tdx_last_report(uint8_t *out) { memcpy(out, g_last_report, REPORT_SIZE); }
int fake_tdx_max_inflight(void) { return g_max_inflight; }
int fake_tdx_context_overlaps(void) { return g_overlaps; }
void fake_tdx_set_delay_us(unsigned us) { g_delay_us = us; }
void fake_tdx_set_platform(const uint8_t *info36) { memcpy(g_platform, info36, sizeof(g_platform)); }
void fake_tdx_reset(void) {
    memset(g_forced, 0, sizeof(g_forced));
    memset(g_calls, 0, sizeof(g_calls));
    g_size_override = 0;
    g_size_set = 0;
    g_pad = 0;
    g_expect_set = 0;
    g_last_quote_size = 0;
    g_last_refresh = -1;
    g_max_inflight = 0;
    g_overlaps = 0;
    g_delay_us = 0;
    memset(g_last_report, 0, sizeof(g_last_report));
}

static fake_ctx_t *lookup(const void *p) {
    const fake_ctx_t *c = (const fake_ctx_t *)p;
    if (c < g_ctx || c >= g_ctx + g_ctx_used) return NULL;
    if (c->magic != CTX_MAGIC || !c->live) return NULL;
    return (fake_ctx_t *)c;
}

static void load_env_files(void) {
    const char *quote_file = getenv("FAKE_TDX_QUOTE");
    const char *report_file = getenv("FAKE_TDX_EXPECT_REPORT");
    if (g_quote == NULL && quote_file != NULL) {
        FILE *f = fopen(quote_file, "rb");
        if (f != NULL) {
            uint8_t buf[65536];
            size_t n = fread(buf, 1, sizeof(buf), f);
            fclose(f);
            fake_tdx_set_quote(buf, (uint32_t)n);
        }
    }
    if (!g_expect_set && report_file != NULL) {
        FILE *f = fopen(report_file, "rb");
        if (f != NULL) {
            g_expect_set = fread(g_expect, 1, REPORT_SIZE, f) == REPORT_SIZE;
            fclose(f);
        }
    }
}

tee_att_error_t tee_att_create_context(const void *p_att_key_id, const char *p_qe_path, void **pp_context) {
    __sync_fetch_and_add(&g_calls[F_CREATE], 1);
    load_env_files();
    if (pp_context == NULL) return TEE_ATT_ERROR_INVALID_PARAMETER;
    if (g_forced[F_CREATE]) return g_forced[F_CREATE];
    (void)p_att_key_id;
    if (g_ctx_used >= MAX_CONTEXTS) return 0x11003u; /* OUT_OF_MEMORY */
    fake_ctx_t *c = &g_ctx[g_ctx_used++];
    memset(c, 0, sizeof(*c));
    c->magic = CTX_MAGIC;
    c->live = 1;
    if (p_qe_path != NULL) strncpy(c->tdqe_path, p_qe_path, sizeof(c->tdqe_path) - 1);
    *pp_context = c;
    return TEE_ATT_SUCCESS;
}

tee_att_error_t tee_att_free_context(void *p_context) {
    __sync_fetch_and_add(&g_calls[F_FREE], 1);
    fake_ctx_t *c = lookup(p_context);
    if (c == NULL) return TEE_ATT_ERROR_INVALID_PARAMETER;
    c->live = 0;
    c->magic = 0;
    return g_forced[F_FREE];
}

static bool tdqe_present(const fake_ctx_t *c) {
    if (c->tdqe_path[0]) return access(c->tdqe_path, R_OK) == 0;
    const char *dir = getenv("FAKE_TDX_ENCLAVE_DIR");
    if (dir == NULL) return true;
    char path[4096];
    snprintf(path, sizeof(path), "%s/libsgx_tdqe.signed.so.1", dir);
    return access(path, R_OK) == 0;
}

tee_att_error_t tee_att_init_quote(const void *p_context, uint8_t *p_qe_target_info, bool refresh_att_key,
                                   size_t *p_pub_key_id_size, uint8_t *p_pub_key_id) {
    __sync_fetch_and_add(&g_calls[F_INIT], 1);
    fake_ctx_t *c = lookup(p_context);
    if (c == NULL || p_pub_key_id_size == NULL) return TEE_ATT_ERROR_INVALID_PARAMETER;
    if (p_pub_key_id == NULL) {
        *p_pub_key_id_size = 32;
        return TEE_ATT_SUCCESS;
    }
    if (*p_pub_key_id_size != 32 || p_qe_target_info == NULL) return TEE_ATT_ERROR_INVALID_PARAMETER;
    g_last_refresh = refresh_att_key;
    if (!tdqe_present(c)) return TEE_ATT_ENCLAVE_LOAD_ERROR;
    if (g_forced[F_INIT]) return g_forced[F_INIT];
    memset(p_qe_target_info, 0, 512);
    memset(p_pub_key_id, 0xEC, 32);
    c->key_ready = 1;
    return TEE_ATT_SUCCESS;
}

static uint32_t quote_size(void) { return g_size_set ? g_size_override : g_quote_len + g_pad; }

tee_att_error_t tee_att_get_quote_size(const void *p_context, uint32_t *p_quote_size) {
    __sync_fetch_and_add(&g_calls[F_SIZE], 1);
    fake_ctx_t *c = lookup(p_context);
    if (c == NULL || p_quote_size == NULL) return TEE_ATT_ERROR_INVALID_PARAMETER;
    if (g_forced[F_SIZE]) return g_forced[F_SIZE];
    if (!c->key_ready) return TEE_ATT_ATT_KEY_NOT_INITIALIZED;
    *p_quote_size = quote_size();
    return TEE_ATT_SUCCESS;
}

tee_att_error_t tee_att_get_quote(const void *p_context, const uint8_t *p_report, uint32_t report_size,
                                  void *p_qe_report_info, uint8_t *p_quote, uint32_t quote_size_in) {
    __sync_fetch_and_add(&g_calls[F_QUOTE], 1);
    (void)p_qe_report_info;
    fake_ctx_t *c = lookup(p_context);
    if (c == NULL || p_report == NULL || p_quote == NULL) return TEE_ATT_ERROR_INVALID_PARAMETER;
    if (report_size != REPORT_SIZE) return TEE_ATT_ERROR_INVALID_PARAMETER;
    int now = __sync_add_and_fetch(&g_inflight, 1);
    int seen = g_max_inflight;
    while (now > seen && !__sync_bool_compare_and_swap(&g_max_inflight, seen, now)) seen = g_max_inflight;
    if (__sync_add_and_fetch(&c->inflight, 1) > 1) __sync_fetch_and_add(&g_overlaps, 1);
    if (g_delay_us) usleep(g_delay_us);
    tee_att_error_t ret = TEE_ATT_SUCCESS;
    memcpy(g_last_report, p_report, REPORT_SIZE);
    g_last_quote_size = quote_size_in;
    if (g_forced[F_QUOTE]) {
        ret = g_forced[F_QUOTE];
    } else if (!c->key_ready) {
        ret = TEE_ATT_ATT_KEY_NOT_INITIALIZED;
    } else if (g_expect_set && memcmp(p_report, g_expect, REPORT_SIZE) != 0) {
        ret = TEE_ATT_INVALID_REPORT;
    } else if (g_quote == NULL || quote_size_in < g_quote_len) {
        ret = TEE_ATT_ERROR_INVALID_PARAMETER;
    } else {
        memset(p_quote, 0, quote_size_in);
        memcpy(p_quote, g_quote, g_quote_len);
    }
    __sync_sub_and_fetch(&c->inflight, 1);
    __sync_sub_and_fetch(&g_inflight, 1);
    return ret;
}

#ifndef FAKE_MINIMAL
tee_att_error_t tee_att_set_path(const void *p_context, int type, const char *p_path) {
    __sync_fetch_and_add(&g_calls[F_PATH], 1);
    fake_ctx_t *c = lookup(p_context);
    if (c == NULL || p_path == NULL || strlen(p_path) >= sizeof(c->qpl_path)) return TEE_ATT_ERROR_INVALID_PARAMETER;
    if (g_forced[F_PATH]) return g_forced[F_PATH];
    if (type == 0) { /* TEE_ATT_TDQE */
        strcpy(c->tdqe_path, p_path);
    } else if (type == 2) { /* TEE_ATT_QPL */
        strcpy(c->qpl_path, p_path);
    } else if (type != 1 && type != 3) {
        return TEE_ATT_ERROR_INVALID_PARAMETER;
    }
    return TEE_ATT_SUCCESS;
}

tee_att_error_t tee_att_get_qpl_handle(const void *p_context, void **pp_qpl_handle) {
    fake_ctx_t *c = lookup(p_context);
    if (c == NULL || pp_qpl_handle == NULL) return TEE_ATT_ERROR_INVALID_PARAMETER;
    const char *name = c->qpl_path[0] ? c->qpl_path : getenv("FAKE_TDX_QPL");
    void *h = dlopen(name ? name : "libdcap_quoteprov.so.1", RTLD_LAZY);
    if (h == NULL) return TEE_ATT_PLATFORM_LIB_UNAVAILABLE;
    *pp_qpl_handle = h;
    return TEE_ATT_SUCCESS;
}

tee_att_error_t tee_att_get_platform_info(const void *p_context, uint8_t *p_platform_info) {
    __sync_fetch_and_add(&g_calls[F_PLATFORM], 1);
    fake_ctx_t *c = lookup(p_context);
    if (c == NULL || p_platform_info == NULL) return TEE_ATT_ERROR_INVALID_PARAMETER;
    if (g_forced[F_PLATFORM]) return g_forced[F_PLATFORM];
    memcpy(p_platform_info, g_platform, sizeof(g_platform));
    return TEE_ATT_SUCCESS;
}
#endif
