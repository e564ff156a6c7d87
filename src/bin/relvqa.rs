//! The relvqa command line; the commands live in `relvqa::cli`.

// Training and inference allocate many short-lived multi-megabyte tensors. glibc's malloc serves
// those with mmap/munmap, and the kernel then spends a third of a training run zeroing fresh
// pages; mimalloc with purging disabled reuses them (30 training steps: 30 s -> 19 s).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (the -sys crate exports no constant).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    // SAFETY: sets a process-wide allocator option before any thread is spawned.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    relvqa::cli::main()
}
