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
