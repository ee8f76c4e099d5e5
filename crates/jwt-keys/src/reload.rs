//! Following a mounted Secret or ConfigMap: load once, then reload when the kubelet swaps it.
//!
//! The kubelet writes a volume atomically: every file `name` is a symlink to `..data/name`,
//! `..data` is a symlink to a timestamped directory, and an update renames a new symlink over
//! `..data`. Reading every file through one resolved `..data` target therefore gives a
//! consistent snapshot even while a swap happens. A file watcher on the directory sees the
//! rename; a periodic re-stat catches what the watcher misses (no inotify, overlay quirks).
//! Keys live behind an `ArcSwap`, so readers never wait for a reload.
//!
//! The module is generic: anything that implements [`Load`] can be followed, and it is built
//! also without a crypto backend feature, so that other programs (the operator's `serve-jwks`)
//! share the same reload logic.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak, mpsc};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use notify::{EventKind, RecursiveMode, Watcher};

/// The symlink through which the kubelet swaps a volume's content.
pub const DATA_LINK: &str = "..data";

/// Something that can be loaded from a (resolved) mounted directory.
pub trait Load: Sized + Send + Sync + 'static {
    /// Why loading failed; logged and kept in [`ReloadStatus::last_error`].
    type Error: std::fmt::Display;
    /// Reads and parses the files this type needs from `dir`. An error keeps the previous
    /// value in use, so reject partial or invalid content here.
    fn load(dir: &Path) -> Result<Self, Self::Error>;
    /// A short description for logs (key ids only, never key material).
    fn describe(&self) -> String;
}

/// How a mounted directory is followed.
#[derive(Debug, Clone, Copy)]
pub struct ReloadOptions {
    /// Watch the directory for changes with `notify`.
    pub watch: bool,
    /// Re-stat the files this often and reload when they changed; `None` disables polling.
    pub poll_interval: Option<Duration>,
    /// Least time between two reloads forced by a caller (an unknown `kid`).
    pub forced_reload_interval: Duration,
}

/// Counters and the last error of a reloading key source, for health checks and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Successful loads, the initial one included.
    pub loads: u64,
    /// Reloads that failed and kept the previous keys.
    pub failures: u64,
    /// Reloads forced by a caller (a token with an unknown `kid`), successful or not.
    pub forced_reloads: u64,
    /// The error of the last failed reload, cleared by the next successful one.
    pub last_error: Option<String>,
    /// Whether the file watcher is running (otherwise only polling follows the mount).
    pub watching: bool,
}

/// What the files looked like when they were read: if this is unchanged, so is the content.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Fingerprint {
    data_target: Option<PathBuf>,
    files: Vec<(OsString, u64, Option<SystemTime>, u64)>,
}

impl Fingerprint {
    fn of(dir: &Path, data_dir: &Path) -> Fingerprint {
        let data_target = std::fs::read_link(dir.join(DATA_LINK)).ok();
        let mut files = Vec::new();
        if let Ok(entries) = std::fs::read_dir(data_dir) {
            for entry in entries.flatten() {
                // Follows symlinks: the content is what matters.
                if let Ok(meta) = std::fs::metadata(entry.path()) {
                    files.push((
                        entry.file_name(),
                        meta.len(),
                        meta.modified().ok(),
                        inode(&meta),
                    ));
                }
            }
        }
        files.sort();
        Fingerprint { data_target, files }
    }
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_meta: &std::fs::Metadata) -> u64 {
    0
}

/// The directory to read files from: the target of `..data` when the kubelet manages `dir`,
/// `dir` itself otherwise (a plain directory, e.g. in local development).
pub fn data_dir(dir: &Path) -> PathBuf {
    let link = dir.join(DATA_LINK);
    if link.symlink_metadata().is_ok()
        && let Ok(resolved) = std::fs::canonicalize(&link)
    {
        return resolved;
    }
    dir.to_owned()
}

struct State {
    loaded: Fingerprint,
    failed: Option<Fingerprint>,
    status: ReloadStatus,
}

struct Shared<T> {
    dir: PathBuf,
    current: ArcSwap<T>,
    state: Mutex<State>,
    epoch: Instant,
    /// Milliseconds since `epoch` (plus one) of the last forced reload; 0 for never.
    last_forced_ms: AtomicU64,
    forced_reload_interval: Duration,
}

/// Keeps the watcher and the poll thread alive as long as a handle exists.
struct Guard {
    _watcher: Option<notify::RecommendedWatcher>,
    // Dropping the sender wakes the poll thread, which then exits.
    _stop_poll: Option<mpsc::Sender<()>>,
}

/// A value loaded from a mounted directory that replaces itself when the directory changes.
///
/// Cloning is cheap; clones share the value, the watcher and the poll thread, which stop when
/// the last clone is dropped.
pub struct Reloading<T> {
    shared: Arc<Shared<T>>,
    _guard: Arc<Guard>,
}

impl<T> Clone for Reloading<T> {
    fn clone(&self) -> Self {
        Reloading {
            shared: Arc::clone(&self.shared),
            _guard: Arc::clone(&self._guard),
        }
    }
}

impl<T: Load> Reloading<T> {
    /// Loads `dir` (failing if that fails) and starts following it.
    pub fn start(dir: PathBuf, options: ReloadOptions) -> Result<Reloading<T>, T::Error> {
        let data = data_dir(&dir);
        let fingerprint = Fingerprint::of(&dir, &data);
        let initial = T::load(&data)?;
        tracing::info!(dir = %dir.display(), keys = %initial.describe(), "loaded keys");
        let shared = Arc::new(Shared {
            current: ArcSwap::from_pointee(initial),
            state: Mutex::new(State {
                loaded: fingerprint,
                failed: None,
                status: ReloadStatus {
                    loads: 1,
                    ..ReloadStatus::default()
                },
            }),
            epoch: Instant::now(),
            last_forced_ms: AtomicU64::new(0),
            forced_reload_interval: options.forced_reload_interval,
            dir,
        });
        let watcher = if options.watch {
            start_watcher(&shared)
        } else {
            None
        };
        shared.lock_state().status.watching = watcher.is_some();
        let stop_poll = options
            .poll_interval
            .map(|interval| start_poller(&shared, interval));
        Ok(Reloading {
            shared,
            _guard: Arc::new(Guard {
                _watcher: watcher,
                _stop_poll: stop_poll,
            }),
        })
    }

    /// The current value; cheap and lock-free.
    pub fn current(&self) -> Arc<T> {
        self.shared.current.load_full()
    }

    /// Re-reads the directory now unless a forced reload happened less than the configured
    /// interval ago; returns whether it re-read.
    pub fn force_reload(&self) -> bool {
        let shared = &self.shared;
        let now = shared.epoch.elapsed().as_millis() as u64 + 1;
        let last = shared.last_forced_ms.load(Ordering::Acquire);
        let interval = u64::try_from(shared.forced_reload_interval.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < interval {
            return false;
        }
        // Only one of several concurrent callers re-reads; the others use what is there.
        if shared
            .last_forced_ms
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        shared.reload(Trigger::Forced);
        true
    }

    /// Reloads if the files changed since the last successful load.
    pub fn reload_if_changed(&self) {
        self.shared.reload(Trigger::Changed);
    }

    /// A snapshot of the counters.
    pub fn status(&self) -> ReloadStatus {
        self.shared.lock_state().status.clone()
    }

    /// The directory being followed.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Changed,
    Forced,
}

impl<T: Load> Shared<T> {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counters inconsistent enough to
        // matter; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reload(&self, trigger: Trigger) {
        let mut state = self.lock_state();
        let data = data_dir(&self.dir);
        let fingerprint = Fingerprint::of(&self.dir, &data);
        if trigger == Trigger::Changed
            && (fingerprint == state.loaded || state.failed.as_ref() == Some(&fingerprint))
        {
            return;
        }
        if trigger == Trigger::Forced {
            state.status.forced_reloads += 1;
        }
        // The kubelet may swap `..data` (and delete the old target) while we read: when the target
        // moved under a failed read, read the new one instead of reporting a failure.
        let mut data = data;
        let mut fingerprint = fingerprint;
        let mut loaded = T::load(&data);
        for _ in 0..3 {
            let now = data_dir(&self.dir);
            if loaded.is_ok() || now == data {
                break;
            }
            data = now;
            fingerprint = Fingerprint::of(&self.dir, &data);
            loaded = T::load(&data);
        }
        match loaded {
            Ok(value) => {
                // The files change without the keys changing: the kubelet writes a new
                // timestamped directory for any change of the ConfigMap (a file this type does
                // not read, a resync), and several watch events and the poll can each see a new
                // fingerprint of one swap. Only a change of the keys is news.
                let keys = value.describe();
                if keys == self.current.load().describe() {
                    tracing::debug!(
                        dir = %self.dir.display(), ?trigger, keys = %keys,
                        "re-read keys; unchanged"
                    );
                } else {
                    tracing::info!(
                        dir = %self.dir.display(), ?trigger, keys = %keys, "reloaded keys"
                    );
                }
                self.current.store(Arc::new(value));
                state.loaded = fingerprint;
                state.failed = None;
                state.status.loads += 1;
                state.status.last_error = None;
            }
            Err(err) => {
                tracing::error!(
                    dir = %self.dir.display(), ?trigger, error = %err,
                    "reloading keys failed; keeping the previous keys"
                );
                state.failed = Some(fingerprint);
                state.status.failures += 1;
                state.status.last_error = Some(err.to_string());
            }
        }
    }
}

fn start_watcher<T: Load>(shared: &Arc<Shared<T>>) -> Option<notify::RecommendedWatcher> {
    let weak: Weak<Shared<T>> = Arc::downgrade(shared);
    let handler = move |event: notify::Result<notify::Event>| {
        let Some(shared) = weak.upgrade() else { return };
        match event {
            // Our own reads show up as access events in a plain directory; they change nothing.
            Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
            Ok(_) => shared.reload(Trigger::Changed),
            Err(err) => tracing::warn!(error = %err, "file watcher error"),
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(err) => {
            tracing::warn!(error = %err, "cannot start file watcher; relying on polling");
            return None;
        }
    };
    match watcher.watch(&shared.dir, RecursiveMode::NonRecursive) {
        Ok(()) => Some(watcher),
        Err(err) => {
            tracing::warn!(
                dir = %shared.dir.display(), error = %err,
                "cannot watch directory; relying on polling"
            );
            None
        }
    }
}

fn start_poller<T: Load>(shared: &Arc<Shared<T>>, interval: Duration) -> mpsc::Sender<()> {
    let (stop, stopped) = mpsc::channel::<()>();
    let weak = Arc::downgrade(shared);
    let spawned = std::thread::Builder::new()
        .name("jwt-keys-poll".to_owned())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                let Some(shared) = weak.upgrade() else { return };
                shared.reload(Trigger::Changed);
            }
        });
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "cannot start poll thread; relying on the file watcher");
    }
    stop
}
