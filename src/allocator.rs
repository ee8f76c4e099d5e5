//! Handing freed heap memory back to the system.
//!
//! glibc's malloc gives threads that allocate at once arenas of their own, and memory freed inside
//! an arena goes back to the system only when whole pages at the top of its heap are free. A
//! restart decodes the first listing of every watch and reconciles every key on several threads at
//! once: at 1000 keys in one namespace the freed pages stayed, and the RSS 15 s after a restart was
//! 30.0 to 33.4 MiB over six restarts (34 to 37 MiB in a bench run), against 28.0 to 28.9 MiB over
//! eight with `malloc_trim` (which hands back every whole free page of every arena). The
//! operator calls it once its first listings are reconciled and after each housekeeping round
//! (`run`). Capping the arenas at the cores (`M_ARENA_MAX` 2) held the same 28 MiB with no CPU
//! cost that storms could tell apart from their spread, but makes the runtime's and the key
//! generation's threads share two arenas for the process's whole life; a trim leaves allocation as
//! it was, costs one walk of the heap now and then, and also returns what a storm freed.

/// Hands every whole free page of the heap back to the system (glibc's `malloc_trim`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: malloc_trim takes the arenas' locks itself and only returns free memory; it may be
    // called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other C libraries are left as they are.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}
