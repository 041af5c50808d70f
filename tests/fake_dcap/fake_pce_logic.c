/*
 * A stand-in for Intel's libsgx_pce_logic.so.1: the PCE call the fake QE3 logic and the engine's
 * start-up probe make. Like Intel's (pce_wrapper.cpp load_pce) it "loads" the PCE enclave on
 * sgx_pce_get_target and answers SGX_PCE_INTERFACE_UNAVAILABLE when the enclave file
 * libsgx_pce.signed.so.1 is missing from $FAKE_DCAP_ENCLAVE_DIR (the real one looks beside the
 * library). Note sgx_pce_error_t success is 0xF000 (SGX_PCE_MK_ERROR(0), sgx_pce.h).
 * Test controls: fake_pce_set_status(status) forces an answer (0 = none), fake_pce_calls().
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SGX_PCE_SUCCESS 0xF000u
#define SGX_PCE_INVALID_PARAMETER 0xF002u
#define SGX_PCE_INTERFACE_UNAVAILABLE 0xF004u

static uint32_t g_forced;
static uint32_t g_calls;

void fake_pce_set_status(uint32_t status) { g_forced = status; }
uint32_t fake_pce_calls(void) { return g_calls; }
void fake_pce_reset(void) { g_forced = 0; g_calls = 0; }

static int enclave_present(void) {
    const char *dir = getenv("FAKE_DCAP_ENCLAVE_DIR");
    if (dir == NULL) return 1;
    char path[4096];
    snprintf(path, sizeof path, "%s/libsgx_pce.signed.so.1", dir);
    return access(path, R_OK) == 0;
}

uint32_t sgx_pce_get_target(uint8_t *p_target, uint16_t *p_isvsvn) {
    g_calls++;
    if (g_forced) return g_forced;
    if (p_target == NULL || p_isvsvn == NULL) return SGX_PCE_INVALID_PARAMETER;
    if (!enclave_present()) return SGX_PCE_INTERFACE_UNAVAILABLE;
    memset(p_target, 0, 512);
    memset(p_target, 0xCE, 32); /* a recognisable PCE MRENCLAVE */
    *p_isvsvn = 13;
    return SGX_PCE_SUCCESS;
}
