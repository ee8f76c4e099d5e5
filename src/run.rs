//! `jwt-key-operator run`: logging, the HTTP endpoints, leader election and one controller per
//! watched namespace (or one for all namespaces).

use std::{
    collections::BTreeMap,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, PartialObjectMeta},
    runtime::{
        Controller, WatchStreamExt,
        events::{Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::broadcast;
use tracing::{error, info, warn};

use crate::{
    cli::{LogFormat, RunArgs},
    controller::{self, Context},
    crd::JwtSigningKey,
    metrics::Metrics,
    resources::{SIGNING_KEY_LABEL, SOURCE_NAMESPACE_LABEL},
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
    if args.leader_election {
        wait_for_leadership(&client, &args, scope.as_deref()).await?;
    }

    let (namespaces, namespace_changes) = watch_namespaces(client.clone());
    // Publication targets come from this store: an empty store before the first list would look
    // like "no namespace matches" and withdraw every copy.
    namespaces
        .wait_until_ready()
        .await
        .map_err(|e| format!("cannot list namespaces: {e}"))?;
    info!(namespaces = ?scope, "starting controllers");
    let context = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "jwt-key-operator".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
        metrics,
        namespaces,
        scope: scope.clone(),
    });
    let (copies_hub, _) = broadcast::channel::<ObjectRef<JwtSigningKey>>(1024);
    let scopes: Vec<Option<String>> = match &scope {
        None => vec![None],
        Some(list) => list.iter().cloned().map(Some).collect(),
    };
    let controllers = scopes.into_iter().map(|namespace| {
        controller_for(
            client.clone(),
            namespace,
            context.clone(),
            copies_hub.clone(),
            namespace_changes.clone(),
        )
    });
    futures::future::join_all(controllers).await;
    info!("controllers stopped");
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

/// Blocks until this process holds the Lease; exits the process when it loses it, so that a
/// standby takes over and this replica restarts as a standby.
async fn wait_for_leadership(
    client: &Client,
    args: &RunArgs,
    scope: Option<&[String]>,
) -> Result<(), String> {
    let namespace = args
        .leader_election_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .or_else(|| scope.and_then(|s| s.first().cloned()))
        .unwrap_or_else(|| "default".into());
    let identity = std::env::var("POD_NAME")
        .ok()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    let duration = args.lease_duration_seconds.max(2);
    let manager = LeaseManagerBuilder::new(client.clone(), &args.leader_election_id)
        .with_namespace(&namespace)
        .with_identity(&identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .build()
        .await
        .map_err(|e| format!("cannot set up leader election in namespace {namespace}: {e}"))?;
    let (mut leader, task) = manager.watch().await;
    info!(
        lease = args.leader_election_id,
        namespace, identity, "waiting to become leader"
    );
    while !*leader.borrow_and_update() {
        leader
            .changed()
            .await
            .map_err(|_| "leader election stopped".to_string())?;
    }
    info!(identity, "became leader");
    tokio::spawn(async move {
        let _task = task;
        loop {
            if leader.changed().await.is_err() || !*leader.borrow() {
                error!("lost leadership; exiting so that another replica takes over");
                std::process::exit(1);
            }
        }
    });
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "jwt-key-operator".into())
}

/// A store of Namespaces for label selection, and a broadcast of "namespace labels changed".
fn watch_namespaces(client: Client) -> (Store<Namespace>, broadcast::Sender<()>) {
    let (reader, writer) = reflector::store();
    let (changes, _) = broadcast::channel(64);
    let sender = changes.clone();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<Namespace>::all(client), watcher::Config::default()),
    )
    .default_backoff();
    tokio::spawn(async move {
        let mut seen: BTreeMap<String, (Option<BTreeMap<String, String>>, bool)> = BTreeMap::new();
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(ns)) => {
                    let now = (
                        ns.metadata.labels.clone(),
                        ns.metadata.deletion_timestamp.is_some(),
                    );
                    if seen.insert(ns.name_any(), now.clone()).as_ref() != Some(&now) {
                        let _ = sender.send(());
                    }
                }
                Ok(watcher::Event::InitApply(ns)) => {
                    seen.insert(
                        ns.name_any(),
                        (
                            ns.metadata.labels.clone(),
                            ns.metadata.deletion_timestamp.is_some(),
                        ),
                    );
                }
                Ok(watcher::Event::Delete(ns)) => {
                    seen.remove(&ns.name_any());
                    let _ = sender.send(());
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "namespace watch failed; publication to other namespaces may lag")
                }
            }
        }
    });
    (reader, changes)
}

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

async fn controller_for(
    client: Client,
    namespace: Option<String>,
    context: Arc<Context>,
    copies_hub: broadcast::Sender<ObjectRef<JwtSigningKey>>,
    namespace_changes: broadcast::Sender<()>,
) {
    fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let controller = Controller::new(
        api::<JwtSigningKey>(&client, &namespace),
        watcher::Config::default().any_semantic(),
    );
    let store = controller.store();

    // Secrets and ConfigMaps are matched by name, so that a conflicting object that goes away frees
    // the name at once. Only metadata is watched: the operator never caches other Secrets' data.
    let secret_store = store.clone();
    let secrets = watcher(
        api::<PartialObjectMeta<Secret>>(&client, &namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    let config_map_store = store.clone();
    let in_scope = namespace.clone();
    let hub = copies_hub.clone();
    let config_maps = watcher(
        api::<PartialObjectMeta<ConfigMap>>(&client, &namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    let own_scope = namespace.clone();
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
        .reconcile_all_on(broadcast_stream(&namespace_changes))
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
