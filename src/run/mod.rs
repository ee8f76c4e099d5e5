//! `jwt-key-operator run`: logging, the HTTP endpoints, leader election and one controller per
//! watched namespace (or one for all namespaces).
//!
//! - `watches`: the JwtSigningKey, Secret and ConfigMap watches each controller reads;
//! - `triggers`: which watch event wakes which keys;
//! - `namespaces`: the namespace watch that publication targets come from;
//! - `endpoints` and `lease`: the HTTP endpoints, and the Lease this process holds or waits for.

mod endpoints;
mod lease;
mod namespaces;
mod triggers;
mod watches;

use std::{
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    Api, Client,
    api::{ListParams, PartialObjectMeta},
    runtime::{Controller, events::Reporter, reflector::ObjectRef, watcher},
};
use tokio::sync::broadcast;
use tracing::{error, info};

use crate::{
    cli::{LogFormat, RunArgs},
    controller::{self, Context},
    crd::JwtSigningKey,
    leader::Fence,
    metrics::Metrics,
    watch::{Cached, Synced},
};
use endpoints::{Health, serve_http};
use triggers::Triggers;

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
        true => Some(Arc::new(lease::elector(&client, &args, scope.as_deref()))),
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
                lease::release_on_signal(elector);
            });
        }
        None => metrics.leading(),
    }

    let (namespaces, namespace_changes) =
        namespaces::watch_namespaces(client.clone(), scope.clone(), metrics.clone());
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
    let watches::ObjectWatches {
        secrets,
        config_maps,
        scopes: by_scope,
    } = watches::objects(&client, &scopes, &metrics);
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
    let scope_count = by_scope.len();
    let controllers: Vec<_> = by_scope
        .into_iter()
        .map(|(namespace, secrets, config_maps)| {
            controller_for(
                client.clone(),
                namespace,
                context.clone(),
                Triggers {
                    secrets,
                    config_maps,
                    copies_hub: copies_hub.clone(),
                    names_hub: names_hub.clone(),
                    namespace_changes: namespace_changes.clone(),
                },
                keys_synced.clone(),
            )
        })
        .collect();
    tokio::spawn(synced(
        secrets,
        config_maps,
        keys_synced,
        scope_count,
        metrics.clone(),
        context.fence.clone(),
    ));
    tokio::spawn(housekeeping(context.clone()));
    futures::future::join_all(controllers).await;
    info!("controllers stopped");
    if let Some(elector) = elector {
        elector.release().await;
    }
    Ok(())
}

/// Once every watch has listed its objects: the `jwtkeys_watches_synced` gauge; and once this
/// replica leads, the memory of the first listings back to the system.
async fn synced(
    secrets: Arc<Cached<Secret>>,
    config_maps: Arc<Cached<ConfigMap>>,
    keys_synced: Synced,
    scope_count: usize,
    metrics: Arc<Metrics>,
    fence: Option<Arc<Fence>>,
) {
    secrets.wait_until_ready().await;
    config_maps.wait_until_ready().await;
    keys_synced.wait_for(scope_count).await;
    info!("all watches synced");
    metrics.watches_synced();
    // The first listings were decoded, and once this replica leads every key is reconciled, on
    // several threads; what they freed goes back to the system after that.
    if let Some(fence) = &fence {
        fence.wait_led().await;
    }
    tokio::time::sleep(RELEASE_AFTER_SYNC).await;
    crate::allocator::release_free_memory();
}

/// Housekeeping of an idle process: what only a next event or a next watch event would free.
async fn housekeeping(context: Arc<Context>) {
    let mut window = tokio::time::interval(controller::SERIES_WINDOW);
    window.tick().await;
    loop {
        window.tick().await;
        context.events.renew();
        context.secrets.prune();
        context.config_maps.prune();
        crate::allocator::release_free_memory();
    }
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

/// How long after its watches have synced and it leads the process hands the memory freed by
/// decoding the first listings and reconciling every key back to the system
/// ([`crate::allocator`]): at 1000 keys those reconciles are over within a second of both
/// (`cargo bench --bench scale`).
const RELEASE_AFTER_SYNC: Duration = Duration::from_secs(10);

/// Concurrent reconciles per controller: enough to keep the key generation pool and the API
/// server busy, few enough that a storm of new keys does not hold thousands of them in memory.
const RECONCILE_CONCURRENCY: u16 = 16;

/// The controller of the JwtSigningKeys in `namespace` (`None`: every namespace), until a signal
/// stops it.
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
    let (store, keys) = watches::keys(&client, namespace.as_deref(), &context, &keys_synced);
    // No watch passes its errors on ([`crate::watch::retried`]): nothing pauses the controller's
    // triggers.
    let controller = Controller::for_stream(keys, store.clone()).with_config(
        kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY),
    );
    triggers
        .attach(controller, &store, namespace)
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
