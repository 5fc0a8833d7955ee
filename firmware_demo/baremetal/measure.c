/* Stack high-water and SysTick measurement for the demo (see demo/platform.h).
 *
 * Instruction counting: QEMU does not model cycles, but with `-icount shift=N` its virtual
 * clock advances 2^N ns per executed instruction, and SysTick (25 MHz processor clock on
 * the mps2 boards) counts that clock. Rather than trusting the constants, the demo times a
 * loop of a known number of instructions and scales decode ticks by that ratio.
 */
#include <stdint.h>

#include "../demo/platform.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

#define STACK_PATTERN 0xA5A5A5A5u

extern uint32_t __stack_limit__;

static uintptr_t current_sp(void)
{
    uintptr_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

/* A leaf function: its stack pointer is within a few bytes of the caller's, and nothing
 * below it is live (no interrupts are enabled), so it can paint right up to it. */
uintptr_t platform_stack_paint(void)
{
    uintptr_t top = current_sp();
    volatile uint32_t *p = &__stack_limit__;
    while ((uintptr_t)p < top)
        *p++ = STACK_PATTERN;
    return top;
}

uint32_t platform_stack_used(uintptr_t top)
{
    const volatile uint32_t *p = &__stack_limit__;
    while ((uintptr_t)p < top && *p == STACK_PATTERN)
        p++;
    return (uint32_t)(top - (uintptr_t)p);
}

void platform_timer_start(void)
{
    SYST_CSR = 0;
    SYST_RVR = 0x00FFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 5u; /* enable, processor clock, no interrupt */
    while (SYST_CVR == 0) {
        /* the counter loads RVR on its first tick; until then it reads 0 */
    }
}

uint32_t platform_timer_ticks(void)
{
    return (0x00FFFFFFu - SYST_CVR) & 0x00FFFFFFu;
}

#define CAL_LOOPS 100000u

uint32_t platform_calibrate(uint32_t *insns)
{
    uint32_t t0, t1, n = CAL_LOOPS;
    platform_timer_start();
    t0 = platform_timer_ticks();
    /* exactly 2 instructions per iteration */
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
    t1 = platform_timer_ticks();
    *insns = 2u * CAL_LOOPS;
    return t1 - t0;
}
