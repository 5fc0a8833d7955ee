/* Cortex-M startup for the QEMU mps2 boards: vector table, reset handler, fault exits.
 *
 * newlib's rdimon crt0 assumes a memory layout these boards do not have, so the reset
 * handler does crt0's job itself: copy .data, zero .bss, enable the FPU, open the
 * semihosting handles, run main and pass its return value to exit(), which QEMU turns into
 * its own exit status. Faults print their name and exit with status 3.
 */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__;
extern uint32_t __stack_top__;
extern int main(int argc, char **argv);
extern void initialise_monitor_handles(void);

void Reset_Handler(void);
void Default_Handler(void);
void HardFault_Handler(void);
void MemManage_Handler(void);
void BusFault_Handler(void);
void UsageFault_Handler(void);
void SecureFault_Handler(void);

#define SEMIHOSTING_SYS_WRITE0 0x04
#define SEMIHOSTING_SYS_EXIT_EXTENDED 0x20
#define ADP_STOPPED_APPLICATION_EXIT 0x20026

static uint32_t semihost(uint32_t op, const void *arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static void fault_exit(const char *what) __attribute__((noreturn));
static void fault_exit(const char *what)
{
    uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, 3};
    semihost(SEMIHOSTING_SYS_WRITE0, "fault: ");
    semihost(SEMIHOSTING_SYS_WRITE0, what);
    semihost(SEMIHOSTING_SYS_WRITE0, "\n");
    semihost(SEMIHOSTING_SYS_EXIT_EXTENDED, block);
    for (;;) {
    }
}

void HardFault_Handler(void) { fault_exit("HardFault"); }
void MemManage_Handler(void) { fault_exit("MemManage"); }
void BusFault_Handler(void) { fault_exit("BusFault"); }
void UsageFault_Handler(void) { fault_exit("UsageFault"); }
void SecureFault_Handler(void) { fault_exit("SecureFault"); }
void Default_Handler(void) { fault_exit("unexpected interrupt"); }

typedef void (*vector_t)(void);

__attribute__((section(".isr_vector"), used)) const vector_t vector_table[16] = {
    (vector_t)(uintptr_t)&__stack_top__,
    Reset_Handler,
    Default_Handler, /* NMI */
    HardFault_Handler,
    MemManage_Handler,
    BusFault_Handler,
    UsageFault_Handler,
    SecureFault_Handler, /* reserved on v7-M */
    0,
    0,
    0,
    Default_Handler, /* SVCall */
    Default_Handler, /* DebugMonitor */
    0,
    Default_Handler, /* PendSV */
    Default_Handler, /* SysTick (polled, its interrupt stays off) */
};

void Reset_Handler(void)
{
    uint32_t *src = &__data_load__, *dst = &__data_start__;
    while (dst < &__data_end__)
        *dst++ = *src++;
    for (dst = &__bss_start__; dst < &__bss_end__;)
        *dst++ = 0;
#if defined(__ARM_FP)
    /* CPACR: full access to CP10/CP11, before any floating-point instruction runs */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    /* fault exceptions get their own handlers instead of escalating to HardFault */
    *(volatile uint32_t *)0xE000ED24u |= 0x7u << 16;
    initialise_monitor_handles();
    exit(main(0, 0));
}
