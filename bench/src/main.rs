//! kafscale-bench: produce, consume and end-to-end load against any
//! Kafka-protocol broker through librdkafka (what most users' clients are built
//! on), a sink server that is the ceiling for the same client, and the plot of the
//! suite's results. `make bench` (scripts/bench.sh) drives it.

mod cli;
mod client;
mod consume;
mod e2e;
mod error;
mod plot;
mod produce;
mod report;
mod sink;
mod stats;

use clap::Parser;

use crate::cli::{Cli, Cmd};
use crate::error::Result;
use crate::report::{render, Report};

fn print<R: Report>(r: &R, json: bool) -> Result<()> {
    println!("{}", render(r, json)?);
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Produce(a) => print(&produce::run(&a.common, &a.load, None)?, a.common.json),
        Cmd::Consume(a) => print(&consume::run(&a)?, a.common.json),
        Cmd::E2e(a) => print(&e2e::run(&a)?, a.common.json),
        Cmd::Sink(a) => print(&sink::run(&a)?, a.json),
        Cmd::Plot(a) => {
            let text = std::fs::read_to_string(&a.results)?;
            plot::draw(&plot::series(&text)?, &a.title, &a.out)
        }
    }
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kafscale-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
