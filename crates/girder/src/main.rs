//! `girder`: serve the reference systems.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use girder::config::{self, ServeSettings};

#[derive(Debug, Parser)]
#[command(name = "girder", version, about = "System design patterns, running.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve every reference system, the API and the dashboard.
    Serve {
        /// TOML file of settings (same names as the flags) [default: ./girder.toml if present].
        #[arg(long, env = "GIRDER_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Box<ServeSettings>,
    },
    /// Print the OpenAPI document.
    Openapi,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    girder::telemetry::init_tracing();
    match cli.command {
        Command::Serve { config, settings } => {
            let config = config::load(*settings, config.as_deref())?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(girder::serve::run(config))
        }
        Command::Openapi => {
            println!("{}", serde_json::to_string_pretty(&girder::app::openapi())?);
            Ok(())
        }
    }
}
