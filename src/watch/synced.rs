//! When the watches have listed their objects, for any number of waiters.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use kube::runtime::watcher;

/// Counts the watches that have listed their objects once, for any number of waiters. (kube's
/// `Store::wait_until_ready` wakes only the last of several tasks that wait at the same time, so
/// only the controller itself waits on it.)
#[derive(Clone)]
pub struct Synced {
    listed: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Default for Synced {
    fn default() -> Self {
        Synced {
            listed: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }
}

impl Synced {
    /// Passes a watcher's events through; its first complete listing counts. Wrap the reflector's
    /// stream, not the watcher's: the store holds a listing only once the reflector has applied
    /// its `InitDone`, and a waiter woken earlier on another thread would read an empty store.
    pub fn track<K, S>(&self, stream: S) -> impl futures::Stream<Item = S::Item> + use<K, S>
    where
        S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    {
        let listed = self.listed.clone();
        let counted = AtomicBool::new(false);
        futures::StreamExt::inspect(stream, move |event| {
            if matches!(event, Ok(watcher::Event::InitDone))
                && !counted.swap(true, Ordering::SeqCst)
            {
                listed.send_modify(|n| *n += 1);
            }
        })
    }

    /// Waits until `count` tracked watches have listed their objects.
    pub async fn wait_for(&self, count: usize) {
        let mut listed = self.listed.subscribe();
        // The sender lives as long as `self`: this cannot fail.
        let _ = listed.wait_for(|n| *n >= count).await;
    }
}
