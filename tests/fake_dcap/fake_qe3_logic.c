/*
 * A stand-in for Intel's libsgx_qe3_logic.so, for tests on machines without SGX.
 *
 * It exports the same sgx_ql_* symbols with the real prototypes
 * (QuoteGeneration/quote_wrapper/quote/inc/sgx_ql_core_wrapper.h) and behaves like the library
 * from the caller's side: the same key id checks, the size query of sgx_ql_init_quote, "no key
 * until init", INVALID_PARAMETER for a short buffer. Its answers come from a REAL quote read from
 * the file named by FAKE_DCAP_QUOTE:
 *   - the QE target info carries the MRENCLAVE, ATTRIBUTES and MISCSELECT of the quote's QE report;
 *   - the ECDSA_ID is the first half of that QE report's report_data (what QE3 certifies);
 *   - the quote is the file's bytes, zero-padded to the caller's buffer;
 *   - the QE report in qe_report_info is the quote's QE report body with report_data =
 *     nonce(16) || app target info's MRENCLAVE(32) || 16 zero bytes, key_id 0xA5.., mac 0x5A..
 *     (a marker the tests recompute: a fake cannot EREPORT).
 * Like the real library it calls the PCE logic library (sgx_pce_get_target is left undefined
 * here, as in libsgx_qe3_logic.so) when it certifies a key, translating its sgx_pce_error_t as
 * qe_logic.cpp translate_pce_errors does (a PCE that cannot load -> SGX_QL_INTERFACE_UNAVAILABLE),
 * and asks the quote provider library (get_qpl_handle: the sgx_set_qpl_path path, else
 * libdcap_quoteprov.so.1) for the PCK cert data with sgx_ql_get_quote_config.
 * load_qe, like Intel's, passes sgx_create_enclave's sgx_status_t through: with
 * FAKE_DCAP_ENCLAVE_DIR set and no libsgx_qe3.signed.so.1 in it, SGX_ERROR_ENCLAVE_FILE_ACCESS
 * (0x200f).
 *
 * Test controls: fake_dcap_set_status(fn, status) forces a status for "policy", "load_qe",
 * "keyid", "init", "size" or "quote"; fake_dcap_calls(fn), fake_dcap_policy(),
 * fake_dcap_last_refresh(), fake_dcap_saw_aesm_addr(), fake_dcap_max_inflight() (most callers
 * inside sgx_ql_get_quote at once), fake_dcap_last_quote_size() (the quote_size given to
 * sgx_ql_get_quote), fake_dcap_reset().
 * fake_dcap_qpl_path() is what sgx_set_qpl_path ("qpl") received.
 * Build with -DFAKE_MINIMAL to leave out the optional sgx_ql_get_keyid, load_qe and
 * sgx_set_qpl_path.
 */
#include <dlfcn.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef uint32_t quote3_error_t;
#define QL_SUCCESS 0x0000u
#define QL_ERROR_UNEXPECTED 0xE001u
#define QL_ERROR_INVALID_PARAMETER 0xE002u
#define QL_UNSUPPORTED_LOADING_POLICY 0xE00Cu
#define QL_INTERFACE_UNAVAILABLE 0xE00Du
#define QL_ATT_KEY_NOT_INITIALIZED 0xE00Fu
#define QL_OUT_OF_EPC 0xE012u
#define SGX_ERROR_ENCLAVE_FILE_ACCESS 0x200Fu
#define SGX_PCE_SUCCESS 0xF000u
#define SGX_PCE_OUT_OF_EPC 0xF003u
#define SGX_PCE_INTERFACE_UNAVAILABLE 0xF004u

/* provided by libsgx_pce_logic.so (real return type: sgx_pce_error_t, 0 = success) */
extern uint32_t sgx_pce_get_target(uint8_t *p_target, uint16_t *p_isvsvn);

enum { F_POLICY, F_LOAD_QE, F_KEYID, F_INIT, F_SIZE, F_QUOTE, F_QPL, F_COUNT };
static const char *const k_names[F_COUNT] = {"policy", "load_qe", "keyid", "init", "size", "quote",
                                             "qpl"};
static char g_qpl_path[256];

static uint32_t g_forced[F_COUNT];
static uint32_t g_calls[F_COUNT];
static int g_policy = -1;
static int g_last_refresh = -1;
static int g_key_ready;
static int g_saw_aesm_addr;
static int g_inflight;
static int g_max_inflight;
static uint32_t g_last_quote_size;

static const uint8_t k_qe3_mrsigner[32] = {
    0x8c, 0x4f, 0x57, 0x75, 0xd7, 0x96, 0x50, 0x3e, 0x96, 0x13, 0x7f, 0x77, 0xc6, 0x8a, 0x82, 0x9a,
    0x00, 0x56, 0xac, 0x8d, 0xed, 0x70, 0x14, 0x0b, 0x08, 0x1b, 0x09, 0x44, 0x90, 0xc5, 0x7b, 0xff};

#define QE_REPORT_BODY_OFFSET (436 + 128) /* quote: header+body 436, then sig 64, att key 64 */

static int find(const char *fn) {
    for (int i = 0; i < F_COUNT; i++)
        if (fn != NULL && strcmp(fn, k_names[i]) == 0) return i;
    return -1;
}

int fake_dcap_set_status(const char *fn, uint32_t status) {
    int i = find(fn);
    if (i < 0) return -1;
    g_forced[i] = status;
    return 0;
}
uint32_t fake_dcap_calls(const char *fn) {
    int i = find(fn);
    return i < 0 ? 0xFFFFFFFFu : g_calls[i];
}
int fake_dcap_policy(void) { return g_policy; }
const char *fake_dcap_qpl_path(void) { return g_qpl_path; }
int fake_dcap_last_refresh(void) { return g_last_refresh; }
int fake_dcap_saw_aesm_addr(void) { return g_saw_aesm_addr; }
int fake_dcap_max_inflight(void) { return g_max_inflight; }
uint32_t fake_dcap_last_quote_size(void) { return g_last_quote_size; }
void fake_dcap_reset(void) {
    memset(g_forced, 0, sizeof g_forced);
    memset(g_calls, 0, sizeof g_calls);
    g_policy = -1;
    g_last_refresh = -1;
    g_key_ready = 0;
    g_saw_aesm_addr = 0;
    g_max_inflight = 0;
    g_last_quote_size = 0;
    g_qpl_path[0] = 0;
}

/* count the call, note the environment, and answer a forced status if one is set */
static uint32_t enter(int f) {
    g_calls[f]++;
    if (getenv("SGX_AESM_ADDR") != NULL) g_saw_aesm_addr = 1;
    return g_forced[f];
}

/* the real quote; NULL if the file is missing */
static const uint8_t *quote_bytes(uint32_t *len) {
    static uint8_t *data;
    static uint32_t size;
    if (data == NULL) {
        const char *path = getenv("FAKE_DCAP_QUOTE");
        FILE *f = path ? fopen(path, "rb") : NULL;
        if (f == NULL) return NULL;
        uint8_t *buf = malloc(1 << 16);
        size_t n = buf ? fread(buf, 1, 1 << 16, f) : 0;
        fclose(f);
        if (n < QE_REPORT_BODY_OFFSET + 384) { free(buf); return NULL; }
        data = buf;
        size = (uint32_t)n;
    }
    *len = size;
    return data;
}

static int key_id_ok(const uint8_t *k) {
    uint16_t id, version, mrsigner_length;
    uint32_t prod_id, algorithm_id;
    memcpy(&id, k + 0, 2);
    memcpy(&version, k + 2, 2);
    memcpy(&mrsigner_length, k + 4, 2);
    memcpy(&prod_id, k + 54, 4);
    memcpy(&algorithm_id, k + 154, 4);
    return id == 0 && version == 0 && mrsigner_length == 32 &&
           memcmp(k + 6, k_qe3_mrsigner, 32) == 0 && prod_id == 1 && algorithm_id == 2;
}

quote3_error_t sgx_ql_set_enclave_load_policy(int policy) {
    uint32_t forced = enter(F_POLICY);
    if (forced) return forced;
    if (policy != 0 && policy != 1) return QL_UNSUPPORTED_LOADING_POLICY;
    g_policy = policy;
    return QL_SUCCESS;
}

#ifndef FAKE_MINIMAL
quote3_error_t sgx_ql_get_keyid(uint8_t *p_att_key_id_ext) {
    uint32_t forced = enter(F_KEYID);
    if (forced) return forced;
    if (p_att_key_id_ext == NULL) return QL_ERROR_INVALID_PARAMETER;
    memset(p_att_key_id_ext, 0, 256);
    uint16_t len = 32;
    uint32_t prod = 1, alg = 2;
    memcpy(p_att_key_id_ext + 4, &len, 2);
    memcpy(p_att_key_id_ext + 6, k_qe3_mrsigner, 32);
    memcpy(p_att_key_id_ext + 54, &prod, 4);
    memcpy(p_att_key_id_ext + 154, &alg, 4);
    return QL_SUCCESS;
}

quote3_error_t sgx_set_qpl_path(const char *p_path) {
    uint32_t forced = enter(F_QPL);
    if (forced) return forced;
    if (p_path == NULL || strlen(p_path) >= sizeof g_qpl_path) return QL_ERROR_INVALID_PARAMETER;
    strcpy(g_qpl_path, p_path);
    return QL_SUCCESS;
}

quote3_error_t load_qe(uint64_t *p_qe_eid, uint8_t *p_qe_attributes, uint8_t *p_launch_token) {
    uint32_t forced = enter(F_LOAD_QE);
    if (forced) return forced;
    if (p_qe_eid == NULL || p_qe_attributes == NULL || p_launch_token == NULL)
        return QL_ERROR_INVALID_PARAMETER;
    const char *dir = getenv("FAKE_DCAP_ENCLAVE_DIR");
    if (dir != NULL) {
        char path[4096];
        snprintf(path, sizeof path, "%s/libsgx_qe3.signed.so.1", dir);
        if (access(path, R_OK) != 0) return SGX_ERROR_ENCLAVE_FILE_ACCESS; /* raw sgx_status_t */
    }
    *p_qe_eid = 0x5347580001ull;
    return QL_SUCCESS;
}

static void *open_qpl(void) {
    if (g_qpl_path[0]) return dlopen(g_qpl_path, RTLD_LAZY);
    void *handle = dlopen("libdcap_quoteprov.so.1", RTLD_LAZY);
    return handle ? handle : dlopen("libdcap_quoteprov.so", RTLD_LAZY);
}

void *get_qpl_handle(void) { return open_qpl(); }

/* the PCK cert data from the QPL, as qe_logic.cpp's get_platform_quote_cert_data asks for it */
static quote3_error_t qpl_cert_data(void) {
    void *handle = open_qpl(); /* static: never another copy's, whatever is loaded globally */
    if (handle == NULL) return QL_SUCCESS; /* no QPL: the real QE3 falls back to the PPID */
    typedef quote3_error_t (*get_config_t)(const void *, void **);
    typedef quote3_error_t (*free_config_t)(void *);
    get_config_t get_config = (get_config_t)dlsym(handle, "sgx_ql_get_quote_config");
    free_config_t free_config = (free_config_t)dlsym(handle, "sgx_ql_free_quote_config");
    quote3_error_t ret = QL_SUCCESS;
    if (get_config != NULL && free_config != NULL) {
        void *config = NULL;
        ret = get_config(NULL, &config);
        if (config != NULL) free_config(config);
    }
    dlclose(handle);
    return ret;
}
#else
static quote3_error_t qpl_cert_data(void) { return QL_SUCCESS; }
#endif

static quote3_error_t translate_pce_errors(uint32_t pce_error) {
    switch (pce_error) {
    case SGX_PCE_SUCCESS: return QL_SUCCESS;
    case SGX_PCE_OUT_OF_EPC: return QL_OUT_OF_EPC;
    case SGX_PCE_INTERFACE_UNAVAILABLE: return QL_INTERFACE_UNAVAILABLE;
    default: return QL_ERROR_UNEXPECTED;
    }
}

quote3_error_t sgx_ql_init_quote(const uint8_t *p_att_key_id, uint8_t *p_qe_target_info,
                                 bool refresh_att_key, size_t *p_pub_key_id_size,
                                 uint8_t *p_pub_key_id) {
    uint32_t forced = enter(F_INIT);
    if (forced) return forced;
    if (p_pub_key_id_size == NULL) return QL_ERROR_INVALID_PARAMETER;
    if (p_att_key_id != NULL && !key_id_ok(p_att_key_id)) return QL_ERROR_INVALID_PARAMETER;
    g_last_refresh = refresh_att_key ? 1 : 0;
    if (p_pub_key_id == NULL) { /* size query: no target info */
        *p_pub_key_id_size = 32;
        return QL_SUCCESS;
    }
    if (*p_pub_key_id_size != 32 || p_qe_target_info == NULL) return QL_ERROR_INVALID_PARAMETER;
    uint8_t pce_target[512];
    uint16_t pce_svn = 0;
    quote3_error_t ret = translate_pce_errors(sgx_pce_get_target(pce_target, &pce_svn));
    if (ret != QL_SUCCESS) return ret;
    ret = qpl_cert_data();
    if (ret != QL_SUCCESS) return ret;
    uint32_t len;
    const uint8_t *q = quote_bytes(&len);
    if (q == NULL) return QL_ERROR_UNEXPECTED;
    const uint8_t *qe = q + QE_REPORT_BODY_OFFSET;
    memset(p_qe_target_info, 0, 512);
    memcpy(p_qe_target_info + 0, qe + 64, 32);  /* mr_enclave */
    memcpy(p_qe_target_info + 32, qe + 48, 16); /* attributes */
    memcpy(p_qe_target_info + 52, qe + 16, 4);  /* misc_select */
    memcpy(p_pub_key_id, qe + 320, 32);         /* ECDSA_ID = QE report_data[0:32] */
    g_key_ready = 1;
    return QL_SUCCESS;
}

quote3_error_t sgx_ql_get_quote_size(const uint8_t *p_att_key_id, uint32_t *p_quote_size) {
    uint32_t forced = enter(F_SIZE);
    if (forced) return forced;
    if (p_quote_size == NULL) return QL_ERROR_INVALID_PARAMETER;
    if (p_att_key_id != NULL && !key_id_ok(p_att_key_id)) return QL_ERROR_INVALID_PARAMETER;
    if (!g_key_ready) return QL_ATT_KEY_NOT_INITIALIZED;
    uint32_t len;
    if (quote_bytes(&len) == NULL) return QL_ERROR_UNEXPECTED;
    *p_quote_size = len;
    return QL_SUCCESS;
}

quote3_error_t sgx_ql_get_quote(const uint8_t *p_app_report, const uint8_t *p_att_key_id,
                                uint8_t *p_qe_report_info, uint8_t *p_quote, uint32_t quote_size) {
    uint32_t forced = enter(F_QUOTE);
    g_last_quote_size = quote_size;
    if (forced) return forced;
    if (p_app_report == NULL || p_quote == NULL) return QL_ERROR_INVALID_PARAMETER;
    if (p_att_key_id != NULL && !key_id_ok(p_att_key_id)) return QL_ERROR_INVALID_PARAMETER;
    if (!g_key_ready) return QL_ATT_KEY_NOT_INITIALIZED;
    uint32_t len;
    const uint8_t *q = quote_bytes(&len);
    if (q == NULL) return QL_ERROR_UNEXPECTED;
    if (quote_size < len) return QL_ERROR_INVALID_PARAMETER;
    /* how many callers are inside at once (the engine must serialise: expect 1) */
    int now = __atomic_add_fetch(&g_inflight, 1, __ATOMIC_SEQ_CST);
    int seen = __atomic_load_n(&g_max_inflight, __ATOMIC_SEQ_CST);
    while (now > seen && !__atomic_compare_exchange_n(&g_max_inflight, &seen, now, false,
                                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    usleep(2000); /* QE3 takes milliseconds per quote */
    __atomic_sub_fetch(&g_inflight, 1, __ATOMIC_SEQ_CST);
    memcpy(p_quote, q, len);
    memset(p_quote + len, 0, quote_size - len);
    if (p_qe_report_info != NULL) {
        uint8_t *rep = p_qe_report_info + 528;
        memcpy(rep, q + QE_REPORT_BODY_OFFSET, 384);
        memset(rep + 320, 0, 64);
        memcpy(rep + 320, p_qe_report_info, 16);            /* the nonce */
        memcpy(rep + 336, p_qe_report_info + 16, 32);       /* app target info's MRENCLAVE */
        memset(rep + 384, 0xA5, 32);                        /* key_id */
        memset(rep + 416, 0x5A, 16);                        /* mac */
    }
    return QL_SUCCESS;
}
