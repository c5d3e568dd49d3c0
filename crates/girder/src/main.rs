//! `girder`: serve the reference systems.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use girder::config;

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
        /// TOML file of settings: the server's at the top level, each system's in its
        /// `[<slug>]` table [default: ./girder.toml if present].
        #[arg(long, env = "GIRDER_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Run an experiment that measures a pattern's trade-off (`girder lab list` names them).
    Lab {
        /// Experiment name, or `list`.
        experiment: String,
        /// A small, fast run instead of the full size.
        #[arg(long)]
        quick: bool,
        /// Also measure against PostgreSQL (uses GIRDER_POSTGRES_URL or the local default).
        #[arg(long)]
        postgres: bool,
        /// Use Redis (GIRDER_REDIS_URL or the local default) for shared layers.
        #[arg(long)]
        redis: bool,
        /// Directory results are written under.
        #[arg(long, env = "GIRDER_LAB_DIR", default_value = "girder-lab")]
        out_dir: PathBuf,
    },
    /// Generate HTTP load against a server and report throughput and latency.
    Loadtest(Box<girder::loadtest::LoadtestArgs>),
}

fn main() -> anyhow::Result<()> {
    // `serve` takes the server's flags and every system's, from the list of systems.
    let matches = Cli::command().mut_subcommand("serve", config::serve_command).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    girder::telemetry::init_tracing();
    match cli.command {
        Command::Serve { config } => {
            let serve = matches.subcommand_matches("serve").expect("the serve subcommand matched");
            let config = config::load(serve, config.as_deref())?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(girder::serve::run(config))
        }
        Command::Loadtest(args) if girder::loadtest::push::is_push(&args.scenario) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime.block_on(girder::loadtest::push::run(&args))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            Ok(())
        }
        Command::Loadtest(args) if args.scenario == "uber" => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime.block_on(girder::loadtest::uber::run(&args))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            let violations = report.violations();
            anyhow::ensure!(violations.is_empty(), "{}", violations.join("; "));
            Ok(())
        }
        Command::Loadtest(args) => {
            let json = args.json;
            let config = girder::loadtest::Config::try_from(*args)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime.block_on(girder::loadtest::run(&config))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            Ok(())
        }
        Command::Lab { experiment, quick, postgres, redis, out_dir } => {
            if experiment == "list" {
                print!("{}", girder::lab::list());
                return Ok(());
            }
            let experiment = girder::lab::find(&experiment)?;
            let postgres_url = postgres.then(|| girder_core::services::Service::Postgres.url());
            let redis_url = redis.then(|| girder_core::services::Service::Redis.url());
            let options = girder::lab::LabOptions { quick, postgres_url, redis_url, out_dir };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(girder::lab::run(experiment, options)).map(drop)
        }
        Command::Openapi => {
            println!(
                "{}",
                serde_json::to_string_pretty(&girder_http::openapi::to_json(
                    &girder::app::openapi()
                ))?
            );
            Ok(())
        }
    }
}
