//! Keeps the agent's memory small: one allocator arena for all its threads ([`one_arena`]), and the memory it
//! freed handed back to the system from time to time. glibc's allocator keeps what a
//! burst freed (the leader's catch-up of every host as the cluster forms, a flood of connections) in its
//! per-thread arenas for good; a trim returns the free pages. Measured on the leader of 64 hosts at rest:
//! 38 MiB resident, 32 MiB after a trim (other agents about 0.5 MiB less).

use std::time::Duration;

/// The first trim, once the agent has started its work (and a new cluster has formed: its burst is over).
const FIRST: Duration = Duration::from_secs(10);

/// How often the agent trims after that.
const EVERY: Duration = Duration::from_secs(60);

/// Trims [`FIRST`] after the start, then every [`EVERY`], until aborted.
pub async fn trim_now_and_then() {
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + FIRST, EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // It walks every arena under their locks: a blocking thread's job.
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

/// Has every thread of the agent allocate from one arena; to be called before any thread starts. glibc gives
/// threads arenas of their own (up to 8 a core), and each keeps what was freed in it for its own thread; with
/// one, what one thread frees another reuses, and a trim reaches all of it. The agent's threads allocate little
/// at a time (each has a cache of small blocks of its own all the same), so sharing costs nothing measurable:
/// alternated runs of `bench scale` at 32 and 64 hosts gave the leader 19.7 MiB instead of 20.6–20.7 at 32 hosts,
/// 23.9–24.1 instead of 26.3–27.3 at 64, every other agent 0.3–0.8 MiB less, and the same CPU; `bench agent`
/// the same throughput and latency. Returns whether the allocator took the setting.
pub fn one_arena() -> bool {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets the allocator's own parameter; with no other thread yet, nothing races it.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1) == 1
    }
    #[cfg(not(target_env = "gnu"))]
    false
}

/// Returns the allocator's free pages to the system.
fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes the allocator's own locks and only releases pages no allocation uses; it reads
    // no memory of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_allocator_takes_one_arena() {
        assert!(super::one_arena(), "glibc refused M_ARENA_MAX = 1");
        let v = vec![1u8; 1 << 20];
        assert_eq!(v.iter().map(|b| *b as usize).sum::<usize>(), 1 << 20, "allocation works after it");
    }

    #[test]
    fn a_trim_keeps_what_is_in_use() {
        let kept: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 * 1024]).collect();
        drop((0..256).map(|_| vec![0u8; 64 * 1024]).collect::<Vec<_>>());
        super::trim();
        assert!(kept.iter().enumerate().all(|(i, v)| v.iter().all(|b| *b == i as u8)));
    }
}
