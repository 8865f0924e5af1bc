//! `kafscale-operator`: `run` (the default) runs the controllers; `crd` prints the
//! CustomResourceDefinitions (or writes them into a directory, as the Helm chart's
//! `crds/` folder holds them).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use k8s_openapi::api::coordination::v1::Lease;
use kafscale_operator::context::Context;
use kafscale_operator::lease::Elector;
use kafscale_operator::metrics::{self, Metrics};
use kafscale_operator::{crd, run};
use kube::{Api, Client};
use tracing::{error, info};

#[derive(Parser)]
#[command(name = "kafscale-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the CRD YAML (one stream), or write one file per CRD into --dir.
    Crd {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print the objects the operator would apply for a KafscaleCluster manifest
    /// (Secret checksum left empty, replicas at the minimum).
    Render {
        /// A KafscaleCluster YAML file.
        file: PathBuf,
        /// Broker image for a cluster that does not name one.
        #[arg(long, default_value = "kafscale/broker:latest")]
        broker_image: String,
    },
    /// Run the controllers (the default).
    Run,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Broker image for clusters that do not set spec.brokers.image.
    #[arg(
        long,
        env = "KAFSCALE_BROKER_IMAGE",
        default_value = "kafscale/broker:latest"
    )]
    broker_image: String,
    /// HTTP address of /metrics and /healthz.
    #[arg(
        long,
        env = "KAFSCALE_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: SocketAddr,
    /// Elect a leader through a Lease (for more than one replica).
    #[arg(long, env = "KAFSCALE_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    #[arg(
        long,
        env = "KAFSCALE_OPERATOR_LEASE_NAME",
        default_value = "kafscale-operator"
    )]
    lease_name: String,
    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "kafscale-operator")]
    identity: String,
    #[arg(long, env = "KAFSCALE_OPERATOR_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// `text` or `json`.
    #[arg(long, env = "KAFSCALE_LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// A level (`info`) or a tracing filter directive.
    #[arg(long, env = "KAFSCALE_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

fn init_logs(a: &RunArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&a.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    if a.log_format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Cmd::Crd { dir }) = &cli.cmd {
        return match print_crds(dir.as_ref()) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kafscale-operator crd: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Some(Cmd::Render { file, broker_image }) = &cli.cmd {
        return match render(file, broker_image) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kafscale-operator render: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    init_logs(&cli.run);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "starting the runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(operate(cli.run)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "operator stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

fn print_crds(dir: Option<&PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    match dir {
        None => print!("{}", crd::crd_yaml()?),
        Some(d) => {
            std::fs::create_dir_all(d)?;
            for (name, yaml) in crd::crd_files()? {
                std::fs::write(d.join(name), yaml)?;
            }
        }
    }
    Ok(())
}

fn render(file: &PathBuf, broker_image: &str) -> Result<(), Box<dyn std::error::Error>> {
    use kafscale_operator::resources as r;
    let k: crd::KafscaleCluster = serde_yaml::from_str(&std::fs::read_to_string(file)?)?;
    let image = k.spec.brokers.image.clone().unwrap_or(broker_image.into());
    let (min, _) = r::hpa_bounds(&k);
    let docs = [
        serde_yaml::to_string(&with_type(&r::statefulset(&k, &image, min, ""))?)?,
        serde_yaml::to_string(&with_type(&r::headless_service(&k))?)?,
        serde_yaml::to_string(&with_type(&r::client_service(&k))?)?,
        serde_yaml::to_string(&with_type(&r::hpa(&k))?)?,
    ];
    for d in docs {
        print!("---\n{d}");
    }
    Ok(())
}

/// The object as JSON with its apiVersion and kind (what an apply sends).
fn with_type<K: kube::Resource<DynamicType = ()> + serde::Serialize>(
    o: &K,
) -> Result<serde_json::Value, serde_json::Error> {
    let mut v = serde_json::to_value(o)?;
    v["apiVersion"] = K::api_version(&()).into();
    v["kind"] = K::kind(&()).into();
    Ok(v)
}

async fn operate(a: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let server = tokio::spawn(metrics::serve(a.metrics_addr, metrics.clone()));
    metrics.started.store(true, Ordering::Relaxed);
    let ctx = Arc::new(Context::new(
        client.clone(),
        a.broker_image,
        metrics.clone(),
    ));
    if !a.leader_election {
        metrics.set_leader(true);
        run::controllers(ctx).await;
        server.abort();
        return Ok(());
    }
    let elector = Elector::new(
        Api::<Lease>::namespaced(client, &a.lease_namespace),
        &a.lease_name,
        &a.identity,
        Duration::from_secs(a.lease_seconds.max(3)),
    );
    info!(lease = %a.lease_name, identity = %a.identity, "waiting for the leader lease");
    tokio::select! {
        _ = elector.acquire() => {}
        _ = tokio::signal::ctrl_c() => return Ok(()),
    }
    metrics.set_leader(true);
    tokio::select! {
        _ = run::controllers(ctx) => Ok(()),
        // Lost the lease: exit, so that Kubernetes restarts this replica as a
        // follower and no reconcile of ours overlaps with the new leader's.
        _ = elector.hold() => Err("lost the leader lease".into()),
    }
}
