//! A watch's retry schedule: each watch backs off on its own, from 250 ms up to 5 s, and its
//! errors are logged and counted here instead of reaching the controller.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::{StreamExt, TryStreamExt};
use kube::runtime::{WatchStreamExt, watcher};
use tracing::warn;

use crate::metrics::Metrics;

/// A watch's events as the operator consumes them: retried on a schedule of the watch's own
/// ([`WatchBackoff`]), errors logged here and never passed on.
///
/// The controller pauses all its triggers for each error it receives, and ends that pause only when
/// an object comes through: with its five watches refused at once (a restarted API server before its
/// RBAC caches are filled), the refusals queued up behind one another and held back every watch,
/// and the keys created meanwhile, for many seconds after the API server authorized the operator
/// again (`tests/outage.rs`).
///
/// A listing that completes ends the backoff; one that only starts (`Init`) does not, so that a list
/// that keeps failing is retried less and less often. A watch the API server can no longer resume
/// (410 Gone, as after its restart) lists again at the first delay: that is the normal way back,
/// not a failure.
pub fn retried<S, K>(
    watch: Watch,
    events: S,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + use<S, K>
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    K: Send,
{
    let backoff = WatchBackoff::default();
    let gone = backoff.gone.clone();
    events
        .filter(|event| std::future::ready(!matches!(event, Ok(watcher::Event::Init))))
        .inspect_err(move |e| {
            if matches!(e, watcher::Error::WatchError(status) if status.code == 410) {
                gone.store(true, Ordering::SeqCst);
            }
        })
        .backoff(backoff)
        .filter_map(move |event| {
            std::future::ready(match event {
                Ok(event) => Some(Ok(event)),
                Err(e) => {
                    warn!(watch = %watch.description, error = %e, "watch failed; retrying");
                    watch.metrics.watch_error(&watch.resource);
                    None
                }
            })
        })
}

/// A watch as logs (`description`) and metrics (`resource`, plural) name it.
pub struct Watch {
    pub description: String,
    pub resource: String,
    pub metrics: Arc<Metrics>,
}

/// Watch retry delays: from 250 ms, doubling, capped at 5 s, so that watches recover within seconds of
/// an API server restart without hammering one that is down. A 410 Gone (flagged in `gone` by
/// [`retried`]) starts the sequence again.
struct WatchBackoff {
    next: Duration,
    gone: Arc<AtomicBool>,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(5);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff {
            next: Self::FIRST,
            gone: Arc::default(),
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.gone.swap(false, Ordering::SeqCst) {
            self.next = Self::FIRST;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    /// What [`retried`] passes on, and how long it waits after each error before it polls its watch
    /// again (on a paused clock).
    async fn retry_schedule(
        events: Vec<Result<watcher::Event<String>, watcher::Error>>,
    ) -> (Vec<String>, Vec<Duration>) {
        let errors = events.iter().filter(|e| e.is_err()).count();
        let metrics = Arc::new(Metrics::default());
        let start = tokio::time::Instant::now();
        let polled = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = polled.clone();
        let source = stream::iter(events).inspect(move |event| {
            record
                .lock()
                .unwrap()
                .push((start.elapsed(), event.is_err()))
        });
        let watch = Watch {
            description: "a test watch".into(),
            resource: "tests".into(),
            metrics: metrics.clone(),
        };
        let passed: Vec<String> = retried(watch, source)
            .map(|event| format!("{:?}", event.expect("errors are not passed on")))
            .collect()
            .await;
        // The delay between each error and the item after it.
        let polled = polled.lock().unwrap().clone();
        let delays = polled
            .windows(2)
            .filter(|w| w[0].1)
            .map(|w| w[1].0 - w[0].0)
            .collect();
        assert!(
            metrics.render().contains(&format!(
                "jwtkeys_watch_errors_total{{resource=\"tests\"}} {errors}\n"
            )),
            "every error counted: {}",
            metrics.render()
        );
        (passed, delays)
    }

    fn failed() -> Result<watcher::Event<String>, watcher::Error> {
        Err(watcher::Error::NoResourceVersion)
    }

    fn gone() -> Result<watcher::Event<String>, watcher::Error> {
        Err(watcher::Error::WatchError(
            kube::core::Status::failure("too old resource version: 401 (408)", "Expired")
                .with_code(410)
                .boxed(),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_that_keeps_failing_is_retried_less_and_less_often() {
        use watcher::Event::{Init, InitApply, InitDone};
        let (passed, gaps) = retry_schedule(vec![
            Ok(Init),
            failed(),
            Ok(Init),
            failed(),
            Ok(Init),
            failed(),
            Ok(Init),
            failed(),
            Ok(Init),
            Ok(InitApply("a".into())),
            Ok(InitDone),
            failed(),
            failed(),
        ])
        .await;
        let ms = Duration::from_millis;
        // A list that only started does not count as progress; one that completed does.
        assert_eq!(gaps, [ms(250), ms(500), ms(1000), ms(2000), ms(250)]);
        assert_eq!(passed, [r#"InitApply("a")"#, "InitDone"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_the_api_server_cannot_resume_lists_again_at_the_first_delay() {
        use watcher::Event::{Apply, Init, InitDone};
        let (passed, gaps) = retry_schedule(vec![
            failed(),
            failed(),
            failed(),
            failed(),
            failed(),
            gone(),
            Ok(Init),
            Ok(InitDone),
            Ok(Apply("b".into())),
        ])
        .await;
        let ms = Duration::from_millis;
        // The 410 after a run of refusals waits 250 ms, not 5 s.
        assert_eq!(
            gaps,
            [ms(250), ms(500), ms(1000), ms(2000), ms(4000), ms(250)]
        );
        assert_eq!(passed, ["InitDone", r#"Apply("b")"#]);
    }
}
