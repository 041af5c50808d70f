/* A stand-in for Intel's libsgx_pce_logic.so: the one PCE call the fake QE3 logic makes. */
#include <stdint.h>
#include <string.h>

uint32_t sgx_pce_get_target(uint8_t *p_target, uint16_t *p_isvsvn) {
    if (p_target == NULL || p_isvsvn == NULL) return 0xF002u; /* SGX_PCE_INVALID_PARAMETER */
    memset(p_target, 0, 512);
    memset(p_target, 0xCE, 32); /* a recognisable PCE MRENCLAVE */
    *p_isvsvn = 13;
    return 0;
}
