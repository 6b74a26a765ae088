//! The `hotframe` binary: parse the CLI, set up logging, turn the subcommand's flags into
//! its module's config (`cli`) and run it. Errors are printed as one readable chain,
//! never as a debug dump.

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
        Command::Serve(args) => hotframe::server::run_serve(args.into_config()?)?,
        Command::Agent(args) => hotframe::agent::run(args.into_config()?)?,
        Command::Export(args) => hotframe::client::export(args.into_config())?,
        Command::Import(args) => hotframe::client::import(args.into_config())?,
        Command::Scrape(args) => hotframe::scrape::run(args.into_config()?)?,
        Command::Demo(args) => hotframe::demo::run(args.into_config()?)?,
        Command::Win(args) => hotframe::client::win::run(args.into_config())?,
        Command::DemoWorkload(args) => hotframe::demo::workload::run(args.into_config()?)?,
    }
    Ok(())
}
