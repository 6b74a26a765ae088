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
        eprintln!("error: {}", error_chain(&err));
        std::process::exit(1);
    }
}

/// The error and its causes joined by `: `, leaving out a cause whose text its parent
/// already contains (`cannot reach URL: io: Connection refused` and then again
/// `Connection refused` from the `io::Error` below it).
fn error_chain(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    let mut parent = text.clone();
    for cause in err.chain().skip(1) {
        let line = cause.to_string();
        if !parent.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        parent = line;
    }
    text
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

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn a_cause_already_in_its_parent_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused (os error 111)");
        let wrapped: anyhow::Error = anyhow::Error::new(io).context("io: Connection refused (os error 111)");
        let err = wrapped.context("cannot reach http://h:9/api");
        assert_eq!(error_chain(&err), "cannot reach http://h:9/api: io: Connection refused (os error 111)");
        let distinct = anyhow::anyhow!("disk full").context("cannot write out.svg");
        assert_eq!(error_chain(&distinct), "cannot write out.svg: disk full");
    }
}
