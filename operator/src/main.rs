//! `kafscale-operator`: `run` (the default) runs the controllers; `crd` prints the
//! CustomResourceDefinitions (or writes them into a directory, as the Helm chart's
//! `crds/` folder holds them); `seccomp` prints or installs the brokers' seccomp
//! profile (the chart's DaemonSet runs `seccomp install` on every node).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use k8s_openapi::api::coordination::v1::Lease;
use kafscale_operator::context::{Context, DEFAULT_SECCOMP_PROFILE};
use kafscale_operator::lease::Elector;
use kafscale_operator::metrics::{self, Metrics};
use kafscale_operator::{crd, run, seccomp};
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
    /// (Secret checksum left empty, replicas at the minimum; the NetworkPolicy
    /// when the cluster asks for one). An invalid spec is an error.
    Render {
        /// A KafscaleCluster YAML file.
        file: PathBuf,
        /// Broker image for a cluster that does not name one.
        #[arg(long, default_value = "kafscale/broker:latest")]
        broker_image: String,
        /// Localhost seccomp profile for a cluster that does not name one.
        #[arg(long, default_value = DEFAULT_SECCOMP_PROFILE)]
        broker_seccomp_profile: String,
    },
    /// The brokers' seccomp profile (io_uring allowed).
    Seccomp {
        #[command(subcommand)]
        cmd: SeccompCmd,
    },
    /// Run the controllers (the default).
    Run,
}

#[derive(Subcommand)]
enum SeccompCmd {
    /// Print the profile (JSON).
    Print,
    /// Write the profile into DIR (the kubelet's seccomp directory plus
    /// `kafscale`), then wait for SIGTERM, as a DaemonSet's container must.
    Install {
        #[arg(long)]
        dir: PathBuf,
        /// Exit once the file is written.
        #[arg(long)]
        once: bool,
    },
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
    /// Localhost seccomp profile (relative to the kubelet's seccomp directory) of
    /// brokers whose cluster does not set spec.brokers.seccompProfile.
    #[arg(
        long,
        env = "KAFSCALE_BROKER_SECCOMP_PROFILE",
        default_value = DEFAULT_SECCOMP_PROFILE
    )]
    broker_seccomp_profile: String,
    /// Watch every Secret, so a rotated credential rolls the brokers at once.
    /// Needs list/watch on all Secrets; without it, rotations are picked up at
    /// the next resync and the operator only gets the Secrets clusters name.
    #[arg(long, env = "KAFSCALE_OPERATOR_WATCH_SECRETS", default_value_t = false, action = clap::ArgAction::Set)]
    watch_secrets: bool,
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
    if let Some(Cmd::Seccomp { cmd }) = &cli.cmd {
        return match seccomp_cmd(cmd) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kafscale-operator seccomp: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Some(Cmd::Render {
        file,
        broker_image,
        broker_seccomp_profile,
    }) = &cli.cmd
    {
        return match render(file, broker_image, broker_seccomp_profile) {
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

fn seccomp_cmd(cmd: &SeccompCmd) -> Result<(), Box<dyn std::error::Error>> {
    match cmd {
        SeccompCmd::Print => print!("{}", seccomp::PROFILE),
        SeccompCmd::Install { dir, once } => {
            let path = seccomp::install(dir)?;
            eprintln!("installed {}", path.display());
            if !once {
                use tokio::signal::unix::{signal, SignalKind};
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let mut term = signal(SignalKind::terminate())?;
                    tokio::select! {
                        _ = term.recv() => Ok::<_, std::io::Error>(()),
                        r = tokio::signal::ctrl_c() => r,
                    }
                })?;
            }
        }
    }
    Ok(())
}

fn render(
    file: &PathBuf,
    broker_image: &str,
    seccomp_profile: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    use kafscale_operator::resources as r;
    let k: crd::KafscaleCluster = serde_yaml::from_str(&std::fs::read_to_string(file)?)?;
    // What the reconcile would refuse (Ready=False/InvalidSpec) is refused here too.
    kafscale_operator::cluster::check_spec(&k).map_err(|e| format!("invalid spec: {e}"))?;
    let image = k.spec.brokers.image.clone().unwrap_or(broker_image.into());
    let (min, _) = r::hpa_bounds(&k);
    let mut docs = vec![
        serde_yaml::to_string(&with_type(&r::statefulset(
            &k,
            &image,
            seccomp_profile,
            min,
            "",
        ))?)?,
        serde_yaml::to_string(&with_type(&r::headless_service(&k))?)?,
        serde_yaml::to_string(&with_type(&r::client_service(&k))?)?,
        serde_yaml::to_string(&with_type(&r::metrics_service(&k))?)?,
        serde_yaml::to_string(&with_type(&r::hpa(&k))?)?,
        serde_yaml::to_string(&with_type(&r::pdb(&k))?)?,
    ];
    if let Some(np) = kafscale_operator::security::network_policy(&k) {
        docs.push(serde_yaml::to_string(&with_type(&np)?)?);
    }
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
    let ctx = Arc::new(
        Context::new(client.clone(), a.broker_image, metrics.clone())
            .with_broker_seccomp_profile(a.broker_seccomp_profile),
    );
    if !a.leader_election {
        metrics.set_leader(true);
        run::controllers(ctx, a.watch_secrets).await;
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
        _ = run::controllers(ctx, a.watch_secrets) => Ok(()),
        // Lost the lease: exit, so that Kubernetes restarts this replica as a
        // follower and no reconcile of ours overlaps with the new leader's.
        _ = elector.hold() => Err("lost the leader lease".into()),
    }
}
