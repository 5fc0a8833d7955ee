/* Measurement hooks the demo calls; bare-metal builds implement them in baremetal/measure.c,
 * hosted builds get no-op versions (EDGEVAE_HOSTED). */
#ifndef EDGEVAE_PLATFORM_H
#define EDGEVAE_PLATFORM_H

#include <stdint.h>

/* Fill the unused stack below the caller with a pattern; returns the caller's stack pointer. */
uintptr_t platform_stack_paint(void);
/* Bytes of stack below `top` that were written since platform_stack_paint(). */
uint32_t platform_stack_used(uintptr_t top);
/* Free-running timer in ticks (SysTick on Cortex-M); 0 when there is none. */
void platform_timer_start(void);
uint32_t platform_timer_ticks(void);
/* Ticks taken by a loop of exactly `insns` instructions (for -icount calibration). */
uint32_t platform_calibrate(uint32_t *insns);

#endif
