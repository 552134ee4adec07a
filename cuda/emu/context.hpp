// The emulator's fiber switch: each emulated CUDA thread runs on a stack of its own, and a block's scheduler
// switches to it and back at every barrier and warp-synchronous call (emulation.hpp).
//
// On x86-64 the switch is a dozen instructions (below): save the callee-saved registers and the SSE / x87 control
// words on the current stack, store the stack pointer, load the other one, restore. ucontext's swapcontext does the
// same plus a sigprocmask system call per switch, and under AddressSanitizer its interceptor clears the shadow of
// the whole target stack on every switch (an mmap and an madvise for a 1 MiB fiber stack): three quarters of an
// emulated test's time went there. Elsewhere (or with SSM_EMU_UCONTEXT defined) ucontext is used.
// AddressSanitizer is told of every switch by the caller (__sanitizer_start_switch_fiber / finish), either way.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__x86_64__) && !defined(SSM_EMU_UCONTEXT)
#define SSM_EMU_STACK_SWITCH 1
#else
#include <ucontext.h>
#endif

#if defined(SSM_EMU_STACK_SWITCH)
extern "C" {
/// Pushes rbp, rbx, r12-r15 and the MXCSR / x87 control words, stores rsp in *save_sp, loads rsp = load_sp and pops
/// the same from there: returns into whatever last switched away with that stack pointer, or into
/// ssm_emu_fiber_start for a fresh context.
void ssm_emu_switch_stack(void** save_sp, void* load_sp);
/// A fresh context's first frame: calls the entry function left in rbx (which never returns).
void ssm_emu_fiber_start();
}

// In a COMDAT group and weak, like an inline function: every translation unit that includes this header emits the
// two functions and the linker keeps one copy.
asm(R"(
    .pushsection .text.ssm_emu_switch_stack,"axG",@progbits,ssm_emu_switch_stack,comdat
    .weak ssm_emu_switch_stack
    .hidden ssm_emu_switch_stack
    .type ssm_emu_switch_stack, @function
    .p2align 4
ssm_emu_switch_stack:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size ssm_emu_switch_stack, .-ssm_emu_switch_stack
    .popsection

    .pushsection .text.ssm_emu_fiber_start,"axG",@progbits,ssm_emu_fiber_start,comdat
    .weak ssm_emu_fiber_start
    .hidden ssm_emu_fiber_start
    .type ssm_emu_fiber_start, @function
    .p2align 4
ssm_emu_fiber_start:
    .cfi_startproc
    .cfi_undefined rip
    callq *%rbx
    ud2
    .cfi_endproc
    .size ssm_emu_fiber_start, .-ssm_emu_fiber_start
    .popsection
)");
#endif

namespace ssm::emu::detail {

/// A suspended execution context: where switch_context resumes it.
struct Context {
#if defined(SSM_EMU_STACK_SWITCH)
  void* sp = nullptr;  // the saved stack pointer, the registers above it
#else
  ucontext_t uc{};
#endif
};

/// Makes `ctx` run entry() on the stack [stack, stack + bytes) when first switched to. entry must never return: it
/// ends by switching away for good.
inline void make_context(Context& ctx, std::byte* stack, std::size_t bytes, void (*entry)()) {
#if defined(SSM_EMU_STACK_SWITCH)
  // The frame ssm_emu_switch_stack pops, from the 16-byte-aligned top down: the return address
  // (ssm_emu_fiber_start), rbp, rbx (= entry), r12, r13, r14, r15, then the control words. After the pops and the
  // return, rsp is the aligned top, so entry is called with the ABI's alignment.
  std::uint32_t mxcsr = 0;
  std::uint16_t fpcw = 0;
  asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(mxcsr), "=m"(fpcw));
  const auto top = (reinterpret_cast<std::uintptr_t>(stack) + bytes) & ~std::uintptr_t{15};
  auto* const frame = reinterpret_cast<std::uint64_t*>(top) - 8;
  frame[7] = reinterpret_cast<std::uint64_t>(&ssm_emu_fiber_start);
  frame[6] = 0;                                       // rbp
  frame[5] = reinterpret_cast<std::uint64_t>(entry);  // rbx
  frame[4] = frame[3] = frame[2] = frame[1] = 0;      // r12, r13, r14, r15
  frame[0] = std::uint64_t{mxcsr} | std::uint64_t{fpcw} << 32;
  ctx.sp = frame;
#else
  getcontext(&ctx.uc);
  ctx.uc.uc_stack.ss_sp = stack;
  ctx.uc.uc_stack.ss_size = bytes;
  ctx.uc.uc_link = nullptr;
  makecontext(&ctx.uc, entry, 0);
#endif
}

/// Saves the running context into `from` and resumes `to`; returns when something switches back to `from`.
inline void switch_context(Context& from, Context& to) {
#if defined(SSM_EMU_STACK_SWITCH)
  ssm_emu_switch_stack(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
}

}  // namespace ssm::emu::detail
