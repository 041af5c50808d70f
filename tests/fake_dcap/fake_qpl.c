/*
 * A stand-in for a quote provider library (libdcap_quoteprov.so.1): the logging callback of
 * Intel's default QPL (QuoteGeneration/qpl/sgx_default_quote_provider.cpp: a message passes when
 * its level <= the level given to sgx_ql_set_logging_callback) and sgx_ql_get_quote_config, which
 * the fake QE3 logic calls when it certifies a key, as Intel's does to get the PCK cert data.
 * Test controls: fake_qpl_set_status(status) makes sgx_ql_get_quote_config fail with status and
 * log "[QPL] No certificate data for this platform." at SGX_QL_LOG_ERROR; fake_qpl_log(level, msg)
 * logs through the callback; fake_qpl_loglevel() is the level registered (-1: no callback);
 * fake_qpl_reset().
 */
#include <stddef.h>
#include <stdint.h>

typedef void (*sgx_ql_logging_callback_t)(int level, const char *message);

static sgx_ql_logging_callback_t g_logger;
static int g_loglevel = -1;
static uint32_t g_forced;

uint32_t sgx_ql_set_logging_callback(sgx_ql_logging_callback_t logger, int loglevel) {
    g_logger = logger;
    g_loglevel = loglevel;
    return 0;
}

void fake_qpl_log(int level, const char *message) {
    if (g_logger != NULL && level <= g_loglevel) g_logger(level, message);
}
void fake_qpl_set_status(uint32_t status) { g_forced = status; }
int fake_qpl_loglevel(void) { return g_loglevel; }
void fake_qpl_reset(void) { g_forced = 0; }

uint32_t sgx_ql_get_quote_config(const void *p_pck_cert_id, void **pp_quote_config) {
    (void)p_pck_cert_id;
    if (pp_quote_config != NULL) *pp_quote_config = NULL;
    if (g_forced) {
        fake_qpl_log(0, "[QPL] No certificate data for this platform.");
        return g_forced;
    }
    fake_qpl_log(1, "[QPL] PCK certificate data served from the cache");
    return 0;
}

uint32_t sgx_ql_free_quote_config(void *p_quote_config) {
    (void)p_quote_config;
    return 0;
}

/*
 * TDX collateral, as Intel's QGS fetches it (dlsym on tee_att_get_qpl_handle's handle):
 *   quote3_error_t tdx_ql_get_quote_verification_collateral(const uint8_t *fmspc,
 *       uint16_t fmspc_size, const char *pck_ca, tdx_ql_qv_collateral_t **pp_quote_collateral);
 *   quote3_error_t tdx_ql_free_quote_verification_collateral(tdx_ql_qv_collateral_t *);
 * tdx_ql_qv_collateral_t is sgx_ql_qve_collateral_t (sgx_ql_lib_common.h). The fake answers for
 * the FMSPC and CA set with fake_qpl_set_collateral_for (else SGX_QL_NO_QUOTE_COLLATERAL_DATA,
 * 0xE01B) with the seven blobs set by fake_qpl_set_blob(i, data, size); fake_qpl_collateral_frees()
 * counts frees.
 */
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint16_t major_version;
    uint16_t minor_version;
    uint32_t tee_type;
    struct {
        char *data;
        uint32_t size;
    } blob[7];
} fake_collateral_t;

static uint8_t g_fmspc[6];
static char g_ca[32];
static char *g_blobs[7];
static uint32_t g_blob_sizes[7];
static uint16_t g_major = 3, g_minor = 1;
static int g_frees;

int fake_qpl_set_blob(int i, const char *data, uint32_t size) {
    if (i < 0 || i >= 7) return -1;
    free(g_blobs[i]);
    g_blobs[i] = malloc(size ? size : 1);
    if (g_blobs[i] == NULL) return -1;
    memcpy(g_blobs[i], data, size);
    g_blob_sizes[i] = size;
    return 0;
}
void fake_qpl_set_collateral_for(const uint8_t *fmspc, const char *ca, uint16_t major, uint16_t minor) {
    memcpy(g_fmspc, fmspc, sizeof(g_fmspc));
    strncpy(g_ca, ca, sizeof(g_ca) - 1);
    g_major = major;
    g_minor = minor;
}
int fake_qpl_collateral_frees(void) { return g_frees; }

uint32_t tdx_ql_get_quote_verification_collateral(const uint8_t *fmspc, uint16_t fmspc_size,
                                                  const char *pck_ca, fake_collateral_t **pp) {
    if (fmspc == NULL || pck_ca == NULL || pp == NULL) return 0xE002u;
    if (fmspc_size != sizeof(g_fmspc) || memcmp(fmspc, g_fmspc, sizeof(g_fmspc)) != 0 ||
        strcmp(pck_ca, g_ca) != 0) {
        fake_qpl_log(0, "[QPL] No collateral for this FMSPC and CA.");
        return 0xE01Bu;
    }
    fake_collateral_t *c = calloc(1, sizeof(*c));
    if (c == NULL) return 0xE003u;
    c->major_version = g_major;
    c->minor_version = g_minor;
    c->tee_type = 0x81;
    for (int i = 0; i < 7; i++) {
        c->blob[i].data = malloc(g_blob_sizes[i] ? g_blob_sizes[i] : 1);
        if (c->blob[i].data != NULL && g_blobs[i] != NULL) memcpy(c->blob[i].data, g_blobs[i], g_blob_sizes[i]);
        c->blob[i].size = g_blob_sizes[i];
    }
    *pp = c;
    return 0;
}

uint32_t tdx_ql_free_quote_verification_collateral(fake_collateral_t *c) {
    if (c == NULL) return 0xE002u;
    for (int i = 0; i < 7; i++) free(c->blob[i].data);
    free(c);
    g_frees++;
    return 0;
}
