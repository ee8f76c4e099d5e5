//! `jwt-key-operator run`: logging, the HTTP endpoints, leader election and one controller per
//! watched namespace (or one for all namespaces).

use std::{
    collections::{BTreeMap, BTreeSet},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, PartialObjectMeta},
    runtime::{
        Controller, WatchStreamExt,
        events::Reporter,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tokio::sync::broadcast;
use tracing::{error, info, warn};

use crate::{
    cli::{LogFormat, RunArgs},
    controller::{self, Context},
    crd::{ACCEPT_FROM_ANNOTATION, JwtSigningKey},
    leader::LeaderElector,
    metrics::Metrics,
    resources::{MANAGED_BY, MANAGED_BY_LABEL, SIGNING_KEY_LABEL, SOURCE_NAMESPACE_LABEL},
    watch::{
        Cached, Synced, Watch, retried, scope_name, strip_bookkeeping, strip_namespace,
        watch_config,
    },
};

/// Runs the operator until SIGTERM/SIGINT. Exits non-zero when it cannot start or loses leadership.
pub async fn run(args: RunArgs) -> ExitCode {
    init_logging(args.log_format);
    match run_inner(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            ExitCode::from(2)
        }
    }
}

pub(crate) fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// State the HTTP endpoints report.
#[derive(Clone)]
struct Health {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

async fn run_inner(args: RunArgs) -> Result<(), String> {
    let client = Client::try_default().await.map_err(|e| {
        format!("cannot configure a Kubernetes client (KUBECONFIG or in-cluster): {e}")
    })?;
    let scope = (!args.watch_namespaces.is_empty()).then(|| args.watch_namespaces.clone());
    check_crd_installed(&client, scope.as_deref()).await?;

    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    serve_http(
        &args,
        Health {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
    )
    .await?;

    // Standbys are ready too: they serve and wait for the Lease, as controller-runtime's replicas do, so
    // that a PodDisruptionBudget counts them.
    ready.store(true, Ordering::SeqCst);
    let elector = match args.leader_election {
        true => Some(Arc::new(elector(&client, &args, scope.as_deref()))),
        false => None,
    };
    // A standby starts its watches and fills its caches at once, as controller-runtime's do, and its
    // reconciles wait for the Lease (see `controller::reconcile`): a replica that takes over, after a
    // crash too, starts from synced caches instead of listing everything then.
    let fence = elector.as_ref().map(|elector| elector.fence());
    match &elector {
        Some(elector) => {
            let (elector, metrics) = (elector.clone(), metrics.clone());
            tokio::spawn(async move {
                elector.acquire().await;
                metrics.leading();
                elector.clone().keep_renewing();
                release_on_signal(elector);
            });
        }
        None => metrics.leading(),
    }

    let (namespaces, namespace_changes) =
        watch_namespaces(client.clone(), scope.clone(), metrics.clone());
    // Publication targets come from this store: an empty store before the first list would look
    // like "no namespace matches" and withdraw every copy.
    namespaces
        .wait_until_ready()
        .await
        .map_err(|e| format!("cannot list namespaces: {e}"))?;
    info!(namespaces = ?scope, "starting controllers");
    let scopes: Vec<Option<String>> = match &scope {
        None => vec![None],
        Some(list) => list.iter().cloned().map(Some).collect(),
    };
    // Reads come from caches of the operator's Secrets and ConfigMaps (whole) and of every other
    // Secret and ConfigMap (metadata only), one set of watches per scope.
    let mut secrets = Cached::<Secret>::default();
    let mut config_maps = Cached::<ConfigMap>::default();
    let mut streams = Vec::new();
    for namespace in &scopes {
        let secret_streams = secrets.watch(&client, namespace.as_deref(), &metrics);
        let config_map_streams = config_maps.watch(&client, namespace.as_deref(), &metrics);
        streams.push((namespace.clone(), secret_streams, config_map_streams));
    }
    let (secrets, config_maps) = (Arc::new(secrets), Arc::new(config_maps));
    let context = Arc::new(Context::new(
        client.clone(),
        controller::Events::new(
            client.clone(),
            Reporter {
                controller: "jwt-key-operator".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
        metrics.clone(),
        namespaces,
        secrets.clone(),
        config_maps.clone(),
        scope.clone(),
        fence,
        args.activation_margin,
    ));
    let (copies_hub, _) = broadcast::channel::<ObjectRef<JwtSigningKey>>(1024);
    let (names_hub, _) = broadcast::channel::<String>(1024);
    let keys_synced = Synced::default();
    let scope_count = streams.len();
    let controllers: Vec<_> = streams
        .into_iter()
        .map(|(namespace, secret_streams, config_map_streams)| {
            controller_for(
                client.clone(),
                namespace,
                context.clone(),
                Triggers {
                    secrets: secret_streams.merged(secrets.clone()),
                    config_maps: config_map_streams.merged(config_maps.clone()),
                    copies_hub: copies_hub.clone(),
                    names_hub: names_hub.clone(),
                    namespace_changes: namespace_changes.clone(),
                },
                keys_synced.clone(),
            )
        })
        .collect();
    {
        let (metrics, fence) = (metrics.clone(), context.fence.clone());
        let (secrets, config_maps) = (secrets.clone(), config_maps.clone());
        tokio::spawn(async move {
            secrets.wait_until_ready().await;
            config_maps.wait_until_ready().await;
            keys_synced.wait_for(scope_count).await;
            info!("all watches synced");
            metrics.watches_synced();
            // The first listings were decoded, and once this replica leads every key is
            // reconciled, on several threads; what they freed goes back to the system after that.
            if let Some(fence) = &fence {
                fence.wait_led().await;
            }
            tokio::time::sleep(RELEASE_AFTER_SYNC).await;
            crate::allocator::release_free_memory();
        });
    }
    // Housekeeping of an idle process: what only a next event or a next watch event would free.
    {
        let context = context.clone();
        tokio::spawn(async move {
            let mut window = tokio::time::interval(controller::SERIES_WINDOW);
            window.tick().await;
            loop {
                window.tick().await;
                context.events.renew();
                context.secrets.prune();
                context.config_maps.prune();
                crate::allocator::release_free_memory();
            }
        });
    }
    futures::future::join_all(controllers).await;
    info!("controllers stopped");
    if let Some(elector) = elector {
        elector.release().await;
    }
    Ok(())
}

async fn check_crd_installed(client: &Client, scope: Option<&[String]>) -> Result<(), String> {
    let api: Api<JwtSigningKey> = match scope.and_then(|s| s.first()) {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Err(
            "the JwtSigningKey CustomResourceDefinition (jwtsigningkeys.jwtkeys.dev) is not installed. \
             Install it with `jwt-key-operator crd | kubectl apply --server-side -f -`, or install the Helm \
             chart charts/jwt-key-operator, then start the operator again."
                .into(),
        ),
        Err(e) => Err(format!("cannot list JwtSigningKeys: {e}")),
    }
}

async fn serve_http(args: &RunArgs, health: Health) -> Result<(), String> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(h): State<Health>| async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    h.metrics.render(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(h): State<Health>| async move {
                if h.ready.load(Ordering::SeqCst) {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }),
        )
        .with_state(health);
    let address = format!("{}:{}", args.http_address, args.http_port);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    info!(address = %local, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(())
}

/// On SIGTERM or SIGINT, the leader closes its fence (no write starts after that), hands the Lease
/// back so that a standby takes over at once, and exits.
fn release_on_signal(elector: Arc<LeaderElector>) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; the Lease will expire instead of being released");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        elector.release().await;
        std::process::exit(0);
    });
}

/// The Lease candidate of this process.
fn elector(client: &Client, args: &RunArgs, scope: Option<&[String]>) -> LeaderElector {
    let namespace = args
        .leader_election_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .or_else(|| scope.and_then(|s| s.first().cloned()))
        .unwrap_or_else(|| "default".into());
    let identity = std::env::var("POD_NAME")
        .ok()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    info!(
        lease = args.leader_election_id,
        namespace, identity, "waiting to become leader"
    );
    LeaderElector::new(
        client.clone(),
        &namespace,
        &args.leader_election_id,
        &identity,
        Duration::from_secs(args.lease_duration_seconds.max(2)),
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "jwt-key-operator".into())
}

/// Up to this many watched namespaces are selected by name in the namespace watch's label
/// selector; a longer scope filters a watch of every namespace.
const NAMESPACE_SELECTOR_MAX: usize = 100;

/// A store of Namespaces for label selection, and a broadcast of "namespace labels changed".
fn watch_namespaces(
    client: Client,
    scope: Option<Vec<String>>,
    metrics: Arc<Metrics>,
) -> (Store<PartialObjectMeta<Namespace>>, broadcast::Sender<()>) {
    // Namespaces outside the scope are never targets: neither the store nor the task below keeps
    // them (1000 of them cost 3-4 MiB), and a short scope is selected by the API server itself
    // through the name label that every namespace carries.
    let config = match &scope {
        Some(names) if !names.is_empty() && names.len() <= NAMESPACE_SELECTOR_MAX => watch_config()
            .labels(&format!(
                "kubernetes.io/metadata.name in ({})",
                names.join(",")
            )),
        _ => watch_config(),
    };
    let in_scope = move |ns: &PartialObjectMeta<Namespace>| {
        scope
            .as_ref()
            .is_none_or(|s| s.iter().any(|n| *n == ns.name_any()))
    };
    let (reader, writer) = reflector::store();
    let (changes, _) = broadcast::channel(64);
    let sender = changes.clone();
    // Publication to other namespaces lags while this watch fails.
    let events = retried(
        Watch {
            description: "namespaces".into(),
            resource: "namespaces".into(),
            metrics,
        },
        reflector::reflector(
            writer,
            watcher(Api::<PartialObjectMeta<Namespace>>::all(client), config)
                .modify(strip_namespace)
                .try_filter(move |event| {
                    std::future::ready(match event {
                        watcher::Event::Apply(ns)
                        | watcher::Event::InitApply(ns)
                        | watcher::Event::Delete(ns) => in_scope(ns),
                        watcher::Event::Init | watcher::Event::InitDone => true,
                    })
                }),
        ),
    )
    .filter_map(|event| std::future::ready(event.ok()));
    tokio::spawn(async move {
        let mut looks = NamespaceLooks::default();
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            if looks.changed(&event) {
                let _ = sender.send(());
            }
        }
    });
    (reader, changes)
}

/// What publication depends on in a namespace: labels (selectors), consent, and whether it is
/// terminating.
type Looks = (Option<BTreeMap<String, String>>, Option<String>, bool);

/// The namespaces as publication last saw them, to tell which watch events change a target.
#[derive(Default)]
struct NamespaceLooks {
    seen: BTreeMap<String, Looks>,
    /// A listing after the first one (a watch back after a 410 or an outage) may show changes no
    /// event announced: consent given or withdrawn, labels changed, namespaces gone.
    listed_once: bool,
    relisted: BTreeSet<String>,
    relist_changed: bool,
}

impl NamespaceLooks {
    /// Whether `event` changes what publication sees (a listing counts once it is done).
    fn changed(&mut self, event: &watcher::Event<PartialObjectMeta<Namespace>>) -> bool {
        let looks = |ns: &PartialObjectMeta<Namespace>| -> Looks {
            (
                ns.metadata.labels.clone(),
                ns.annotations().get(ACCEPT_FROM_ANNOTATION).cloned(),
                ns.metadata.deletion_timestamp.is_some(),
            )
        };
        match event {
            watcher::Event::Apply(ns) => {
                let now = looks(ns);
                self.seen.insert(ns.name_any(), now.clone()).as_ref() != Some(&now)
            }
            watcher::Event::Delete(ns) => {
                self.seen.remove(&ns.name_any());
                true
            }
            watcher::Event::Init => {
                self.relisted.clear();
                self.relist_changed = false;
                false
            }
            watcher::Event::InitApply(ns) => {
                let now = looks(ns);
                self.relisted.insert(ns.name_any());
                self.relist_changed |=
                    self.seen.insert(ns.name_any(), now.clone()).as_ref() != Some(&now);
                false
            }
            watcher::Event::InitDone => {
                let before = self.seen.len();
                let relisted = &self.relisted;
                self.seen.retain(|name, _| relisted.contains(name));
                self.relist_changed |= self.seen.len() != before;
                let changed = self.listed_once && self.relist_changed;
                self.listed_once = true;
                changed
            }
        }
    }
}

/// How long after its watches have synced and it leads the process hands the memory freed by
/// decoding the first listings and reconciling every key back to the system
/// ([`crate::allocator`]): at 1000 keys those reconciles are over within a second of both
/// (`cargo bench --bench scale`).
const RELEASE_AFTER_SYNC: Duration = Duration::from_secs(10);

fn broadcast_stream<T: Clone + Send + 'static>(
    sender: &broadcast::Sender<T>,
) -> impl futures::Stream<Item = T> + Send + use<T> {
    stream::unfold(sender.subscribe(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(item) => return Some((item, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// The keys that publish into other namespaces (a `namespaceSelector`) and match `also`.
fn publishing_keys(
    store: &Store<JwtSigningKey>,
    also: impl Fn(&JwtSigningKey) -> bool,
) -> Vec<ObjectRef<JwtSigningKey>> {
    store
        .state()
        .into_iter()
        .filter(|j| {
            j.spec
                .publish
                .as_ref()
                .is_some_and(|p| p.namespace_selector.is_some())
                && also(j)
        })
        .map(|j| ObjectRef::from_obj(&*j))
        .collect()
}

/// What makes a controller reconcile besides its JwtSigningKeys.
struct Triggers<S, C> {
    /// Every Secret in scope (as metadata).
    secrets: S,
    /// Every ConfigMap in scope (as metadata).
    config_maps: C,
    copies_hub: broadcast::Sender<ObjectRef<JwtSigningKey>>,
    names_hub: broadcast::Sender<String>,
    namespace_changes: broadcast::Sender<()>,
}

/// What of a JwtSigningKey a reconcile acts on: not its status (which only the operator writes).
fn reconcile_worthy(jsk: &JwtSigningKey) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    jsk.metadata.uid.hash(&mut hasher);
    jsk.metadata.generation.hash(&mut hasher);
    jsk.metadata.annotations.hash(&mut hasher);
    jsk.metadata.finalizers.hash(&mut hasher);
    jsk.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

/// Concurrent reconciles per controller: enough to keep the key generation pool and the API
/// server busy, few enough that a storm of new keys does not hold thousands of them in memory.
const RECONCILE_CONCURRENCY: u16 = 16;

async fn controller_for<S, C>(
    client: Client,
    namespace: Option<String>,
    context: Arc<Context>,
    triggers: Triggers<S, C>,
    keys_synced: Synced,
) where
    S: futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static,
    C: futures::Stream<Item = Result<PartialObjectMeta<ConfigMap>, watcher::Error>>
        + Send
        + 'static,
{
    let Triggers {
        secrets,
        config_maps,
        copies_hub,
        names_hub,
        namespace_changes,
    } = triggers;
    let jsk_api: Api<JwtSigningKey> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (store, writer) = reflector::store();
    let (seen, scope) = (context.clone(), namespace.clone());
    let keys = keys_synced.track(
        reflector::reflector(
            writer,
            watcher(jsk_api, watch_config().any_semantic())
                .modify(|jsk: &mut JwtSigningKey| strip_bookkeeping(&mut jsk.metadata)),
        )
        .inspect_ok(move |event| seen.key_event(scope.as_deref(), event)),
    );
    let keys = retried(
        Watch {
            description: format!("JwtSigningKeys in {}", scope_name(namespace.as_deref())),
            resource: "jwtsigningkeys".into(),
            metrics: context.metrics.clone(),
        },
        keys,
    )
    .applied_objects()
    .predicate_filter(reconcile_worthy, Default::default());
    // No watch passes its errors on ([`retried`]): nothing pauses the controller's triggers.
    let controller = Controller::for_stream(keys, store.clone()).with_config(
        kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY),
    );

    // Secrets and ConfigMaps are matched by name, so that a conflicting object that goes away frees
    // the name at once. These streams carry metadata only: the operator never caches other
    // Secrets' data.
    let secret_store = store.clone();
    let config_map_store = store.clone();
    let in_scope = namespace.clone();
    let hub = copies_hub.clone();
    let own_scope = namespace.clone();
    // A foreign ConfigMap that changes or goes away anywhere may free the name in a target
    // namespace: every key that publishes copies under that name looks again at once.
    let names = names_hub.clone();
    let names_store = store.clone();
    let freed_names = broadcast_stream(&names_hub).flat_map(move |name| {
        stream::iter(publishing_keys(&names_store, |j| {
            j.config_map_name() == name
        }))
    });
    // A namespace whose labels, consent or life changed concerns only the keys that publish into
    // other namespaces.
    let selecting_store = store.clone();
    let namespace_changed = broadcast_stream(&namespace_changes)
        .flat_map(move |()| stream::iter(publishing_keys(&selecting_store, |_| true)));
    let from_hub = broadcast_stream(&copies_hub).filter(move |r| {
        futures::future::ready(
            own_scope
                .as_ref()
                .is_none_or(|ns| r.namespace.as_ref() == Some(ns)),
        )
    });

    controller
        .watches_stream(secrets, move |secret| {
            let (ns, name) = (secret.namespace(), secret.name_any());
            secret_store
                .state()
                .into_iter()
                .filter(|j| j.namespace() == ns && j.secret_name() == name)
                .map(|j| ObjectRef::from_obj(&*j))
                .collect::<Vec<_>>()
        })
        .watches_stream(config_maps, move |cm| {
            let (ns, name) = (cm.namespace(), cm.name_any());
            let mut refs: Vec<ObjectRef<JwtSigningKey>> = config_map_store
                .state()
                .into_iter()
                .filter(|j| j.namespace() == ns && j.config_map_name() == name)
                .map(|j| ObjectRef::from_obj(&*j))
                .collect();
            let labels = cm.labels();
            if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
                let _ = names.send(name.clone());
            }
            if let (Some(source_ns), Some(source)) = (
                labels.get(SOURCE_NAMESPACE_LABEL),
                labels.get(SIGNING_KEY_LABEL),
            ) {
                let owner = ObjectRef::new(source).within(source_ns);
                if in_scope.as_ref().is_none_or(|ns| ns == source_ns) {
                    refs.push(owner);
                } else {
                    let _ = hub.send(owner);
                }
            }
            refs
        })
        .reconcile_on(from_hub)
        .reconcile_on(freed_names)
        .reconcile_on(namespace_changed)
        .shutdown_on_signal()
        .run(controller::reconcile, controller::error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile attempt failed");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response, StatusCode};
    use kube::client::Body;

    fn namespace(name: &str, accept_from: Option<&str>) -> PartialObjectMeta<Namespace> {
        let mut ns = PartialObjectMeta::<Namespace>::default();
        ns.metadata.name = Some(name.into());
        ns.metadata.annotations =
            accept_from.map(|a| [(ACCEPT_FROM_ANNOTATION.to_string(), a.to_string())].into());
        ns
    }

    #[test]
    fn consent_changed_while_the_watch_was_away_counts_once_the_listing_is_done() {
        use watcher::Event::*;
        let mut looks = NamespaceLooks::default();
        let first = [
            Init,
            InitApply(namespace("a", None)),
            InitApply(namespace("b", Some("auth/*"))),
            InitDone,
        ];
        assert!(
            first.iter().all(|e| !looks.changed(e)),
            "the first listing is what the reconciles start from"
        );
        let same = [
            Init,
            InitApply(namespace("a", None)),
            InitApply(namespace("b", Some("auth/*"))),
            InitDone,
        ];
        assert!(same.iter().all(|e| !looks.changed(e)), "nothing changed");
        let consent = [
            Init,
            InitApply(namespace("a", Some("auth/*"))),
            InitApply(namespace("b", Some("auth/*"))),
        ];
        assert!(consent.iter().all(|e| !looks.changed(e)));
        assert!(looks.changed(&InitDone), "consent given while away");
        let gone = [Init, InitApply(namespace("a", Some("auth/*")))];
        assert!(gone.iter().all(|e| !looks.changed(e)));
        assert!(looks.changed(&InitDone), "a namespace gone while away");
        assert!(
            looks.changed(&Apply(namespace("a", None))),
            "consent withdrawn"
        );
        assert!(!looks.changed(&Apply(namespace("a", None))));
    }

    /// An API server that knows no JwtSigningKey resource, as before the CRD is installed.
    fn api_without_the_crd() -> Client {
        let service = tower::service_fn(|request: Request<Body>| async move {
            assert!(request.uri().path().contains("jwtsigningkeys"));
            let status = serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "the server could not find the requested resource",
                "reason": "NotFound", "code": 404
            });
            Response::builder()
                .status(StatusCode::NOT_FOUND)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&status).unwrap()))
        });
        Client::new(service, "default")
    }

    #[tokio::test]
    async fn without_the_crd_start_up_fails_with_how_to_install_it() {
        let error = check_crd_installed(&api_without_the_crd(), Some(&["auth".to_string()]))
            .await
            .expect_err("a missing CRD stops the operator");
        assert!(
            error.contains("jwtsigningkeys.jwtkeys.dev) is not installed"),
            "{error}"
        );
        assert!(
            error.contains("jwt-key-operator crd | kubectl apply"),
            "{error}"
        );
        assert!(error.contains("charts/jwt-key-operator"), "{error}");
    }
}
