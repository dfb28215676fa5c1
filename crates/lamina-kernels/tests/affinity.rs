//! The kernels' pool sizes itself from the process's CPU affinity, not the machine's
//! cores (a test binary of its own: the pool is sized once, at its first use).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
#[cfg(target_os = "linux")]
fn the_pool_has_one_thread_per_core_this_process_may_use() {
    if std::env::var_os("LAMINA_THREADS").is_some() {
        // The variable decides instead; scripts/test.sh runs this binary without it too.
        assert_eq!(lamina_kernels::threads().to_string(), std::env::var("LAMINA_THREADS").unwrap());
        return;
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET/sched_setaffinity act on
    // this process's own mask.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
    }
    assert_eq!(lamina_kernels::threads(), 1);
}
