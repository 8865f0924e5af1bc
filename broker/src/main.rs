//! kafscale-broker: the command line. Start-up and shutdown are in the library
//! (`boot.rs`); see docs/architecture.md.

use std::process::ExitCode;

use clap::Parser;
use kafscale_broker::config::{Cli, Command, LogFormat};
use kafscale_broker::{control, Config};

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if cfg.log_format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Ctl(args)) = cli.command {
        return control::cli::run(args);
    }
    let cfg = cli.config;
    if let Err(e) = cfg.validate() {
        eprintln!("kafscale-broker: {e}");
        return ExitCode::from(2);
    }
    init_logging(&cfg);
    match kafscale_broker::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        // `{e}` already ends with its cause's text (see `StartError`); printing
        // the source chain as well would repeat it.
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("kafscale-broker: {e}");
            ExitCode::FAILURE
        }
    }
}
