//! The `hotframe` binary: parse the CLI, set up logging, run the subcommand. Errors are
//! printed as one readable chain, never as a debug dump.

use anyhow::Result;
use clap::Parser;
use hotframe::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if let Err(err) = run(cli.command) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Serve(args) => hotframe::server::run_serve(args)?,
        Command::Agent(args) => hotframe::agent::run(args)?,
        Command::Export(args) => hotframe::client::export(args)?,
        Command::Import(args) => hotframe::client::import(args)?,
        Command::Scrape(args) => hotframe::scrape::run(args)?,
        Command::Demo(args) => hotframe::demo::run(args)?,
        Command::Win(args) => hotframe::client::win::run(args)?,
        Command::DemoWorkload(args) => hotframe::demo::workload::run(args)?,
    }
    Ok(())
}
