//! Command-line interface: parsing, config loading, and the exit statuses of SPEC.md
//! (0 ok, 1 failed, 2 usage, 69 node unreachable, 78 invalid configuration).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use chom_core::config::{Config, ConfigError, ConfigErrors, DEFAULT_TOML};
use chom_core::limits::{self, MAX_ATTEMPTS, MAX_LIST_LIMIT, MAX_SITES_PER_SERVER};
use clap::{Parser, Subcommand};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::{HumanDuration, Id, Method, breaker, failed, jobs, node, queue, sites};
use crate::api::{alerts, metrics, tenants, vps};
use crate::output;
use crate::rpc::client::{self, ClientError};

/// Exit status for an invalid configuration (EX_CONFIG); systemd does not restart on it.
const EXIT_CONFIG: u8 = 78;

#[derive(Debug, Parser)]
#[command(
    name = "chom",
    version,
    about = "CHOM operations node: supervised job queue, VPS fleet and self-healing"
)]
struct Cli {
    /// Config file (TOML). Without it the embedded defaults apply.
    #[arg(long, global = true, env = "CHOM_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Admin socket of the node to talk to (default: the config's admin.socket).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print exactly one JSON document to stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node in the foreground (what systemd starts); migrates the database first.
    Node,
    /// Validate or print configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Apply database migrations and exit.
    Migrate,
    /// Node summary: version, uptime, tree health.
    Status,
    /// The live nodes sharing this node's database: name, instance, version, started, last
    /// heartbeat, jobs running.
    Cluster,
    /// The supervision tree: each actor's path, state, restart count, last failure.
    Tree,
    /// Restart one actor or subtree by path, e.g. store, edge/http, monitors.
    Restart {
        /// The actor's path as `chom tree` shows it.
        path: String,
    },
    /// Run every health check now and print the results (exit 1 when unhealthy).
    Health,
    /// Graceful shutdown of the node (same as SIGTERM).
    Shutdown,
    /// Enqueue, inspect and kill jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Queue statistics; pause and resume claims from a queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Dead letters: jobs that failed for good.
    #[command(subcommand)]
    Failed(FailedCommand),
    /// The fleet's servers: list, add and remove (starts and stops VPS actors live).
    #[command(subcommand)]
    Vps(VpsCommand),
    /// Circuit breakers of the servers: list; reset, force open or close one.
    #[command(subcommand)]
    Breaker(BreakerCommand),
    /// Active alerts received from Alertmanager (critical first).
    Alerts,
    /// Tenants (customers).
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Customer sites: list, add (and provision), provision again.
    #[command(subcommand)]
    Sites(SitesCommand),
    /// The operator web console (ui.listen).
    #[command(subcommand)]
    Ui(UiCommand),
    /// The observability host's Prometheus, through the node (cached answers when it is down).
    #[command(subcommand)]
    Metrics(MetricsCommand),
    /// Benchmarks that need no running node.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum VpsCommand {
    /// Every server, with whether its actor runs.
    List,
    /// Add a server and start its actor (no connection is made until a command needs one).
    Add {
        /// Server id (lowercase letters, digits, '.', '_', '-'; at most 64 characters).
        #[arg(value_parser = vps_id_arg)]
        id: String,
        /// Host name or IP address.
        #[arg(value_parser = host_arg)]
        host: String,
        /// SSH port.
        #[arg(long, default_value_t = 22, value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
        /// Remote user (default: ssh.user); a login name such as `chom` or `deploy_2`.
        #[arg(long, value_parser = login_arg)]
        user: Option<String>,
        /// Pin the host key by fingerprint (SHA256:..., as `ssh-keygen -lf` prints it)
        /// instead of checking ssh.known_hosts.
        #[arg(long, value_parser = fingerprint_arg)]
        host_key: Option<String>,
        /// Owning tenant's id: only its sites may be placed on the server (default: shared).
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        tenant: Option<i64>,
        /// At most this many sites on the server (1 to 100000; default: no limit).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SITES_PER_SERVER)))]
        max_sites: Option<u32>,
    },
    /// Remove a server (refused while sites are on it) and stop its actor.
    Remove {
        /// Server id.
        #[arg(value_parser = vps_id_arg)]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum MetricsCommand {
    /// One PromQL instant query: Prometheus' answer, or the cached one (marked) while the
    /// observability host is unreachable; exit 1 only when neither exists.
    Query {
        /// PromQL, e.g. 'sum(chom_queue_size)'.
        query: String,
        /// Evaluation time (RFC 3339 or Unix seconds); default now.
        #[arg(long)]
        time: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum BreakerCommand {
    /// Every server's breaker: state, recent failures, reason, time left open.
    List,
    /// Back to closed with failures forgotten (also ends forced open and disabled).
    Reset {
        /// Server id.
        #[arg(value_parser = vps_id_arg)]
        vps: String,
    },
    /// Force open (maintenance): every call is rejected until reset or closed.
    Open {
        /// Server id.
        #[arg(value_parser = vps_id_arg)]
        vps: String,
    },
    /// Close now.
    Close {
        /// Server id.
        #[arg(value_parser = vps_id_arg)]
        vps: String,
    },
}

#[derive(Debug, Subcommand)]
enum TenantsCommand {
    /// Every tenant.
    List,
    /// Create a tenant; prints its id.
    Add {
        /// Unique name (at most 200 characters, no control characters).
        #[arg(value_parser = tenant_name_arg)]
        name: String,
        /// starter, pro or enterprise.
        #[arg(long, default_value = "starter")]
        tier: String,
    },
    /// Suspend a tenant: its API requests are refused (403) until it is resumed.
    Suspend {
        /// The tenant's id.
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        tenant: i64,
    },
    /// Let a suspended tenant use the API again.
    Resume {
        /// The tenant's id.
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        tenant: i64,
    },
    /// Make an API token for a tenant and print it, this once (only its SHA-256 is stored).
    Token {
        /// The tenant's id.
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        tenant: i64,
        /// A label for the token (at most 100 characters, no control characters; default
        /// `default`).
        #[arg(long, value_parser = token_name_arg)]
        name: Option<String>,
    },
    /// A tenant's API tokens: name, created, last used, revoked (never the token).
    Tokens {
        /// The tenant's id.
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        tenant: i64,
    },
    /// Revoke an API token: requests carrying it are refused from now on.
    Revoke {
        /// The token's id (`chom tenants tokens TENANT`).
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
enum UiCommand {
    /// Console operators.
    #[command(subcommand)]
    User(UiUserCommand),
}

#[derive(Debug, Subcommand)]
enum UiUserCommand {
    /// Add an operator and print their generated password, this once (only its Argon2id
    /// hash is stored).
    Add {
        /// Sign-in name (lowercase letters, digits, '.', '_', '-'; at most 64 characters).
        #[arg(value_parser = ui_user_arg)]
        name: String,
    },
    /// Remove an operator; their sessions end at once.
    Remove {
        /// Sign-in name.
        #[arg(value_parser = ui_user_arg)]
        name: String,
    },
}

/// An operator name, checked as the node checks it.
fn ui_user_arg(value: &str) -> Result<String, String> {
    crate::api::ui::check_user_name(value)
        .map(|()| value.to_owned())
        .map_err(|e| e.message)
}

#[derive(Debug, Subcommand)]
enum SitesCommand {
    /// Sites, optionally of one tenant.
    List {
        /// Only this tenant's sites.
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        tenant: Option<i64>,
    },
    /// Create a site and enqueue its provisioning (`site:create DOMAIN TYPE` on the server).
    Add {
        /// Domain name.
        domain: String,
        /// Owning tenant's id.
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        tenant: i64,
        /// Server id.
        #[arg(long, value_parser = vps_id_arg)]
        vps: String,
        /// Site type passed to site:create.
        #[arg(long = "type", default_value = "wordpress")]
        site_type: String,
        /// Only record the site; do not enqueue site.provision.
        #[arg(long)]
        no_provision: bool,
    },
    /// Enqueue site.provision for a site again (e.g. after it failed).
    Provision {
        /// Site id.
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// Enqueue a job; prints its id. With --batch: newline-delimited JSON objects on stdin,
    /// each with jobs.enqueue's parameters (e.g. {"kind": "noop", "payload": {}}); prints one
    /// id per line in input order.
    Enqueue {
        /// The job kind, e.g. noop, vps.exec, site.provision.
        #[arg(required_unless_present = "batch")]
        kind: Option<String>,
        /// Read the jobs from stdin instead (sent in chunks of up to 1000, one transaction each).
        #[arg(long, conflicts_with_all = ["kind", "queue", "delay", "max_attempts", "timeout", "unique_key"])]
        batch: bool,
        /// The payload (JSON).
        #[arg(long, default_value = "{}")]
        payload: String,
        /// Queue (default: the kind's policy, usually `default`).
        #[arg(long)]
        queue: Option<String>,
        /// Not before this long from now, e.g. 30s, 5m (at most 10 years).
        #[arg(long, value_parser = delay_arg)]
        delay: Option<Duration>,
        /// Attempts before the job fails for good (default: the kind's policy; 1 to 1000).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_ATTEMPTS as i64))]
        max_attempts: Option<u32>,
        /// Time limit of one attempt (default: the kind's policy; at most 1 week).
        #[arg(long, value_parser = job_timeout_arg)]
        timeout: Option<Duration>,
        /// While a pending/running job has this key, return it instead of adding another
        /// (at most 255 characters, no control characters).
        #[arg(long, value_parser = unique_key_arg)]
        unique_key: Option<String>,
    },
    /// One job: state, attempts, last error.
    Show {
        /// Job id.
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        id: i64,
    },
    /// Jobs, newest first.
    List {
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only this state: pending, reserved, completed, failed.
        #[arg(long)]
        state: Option<String>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=MAX_LIST_LIMIT as i64))]
        limit: u32,
    },
    /// Move jobs reserved longer than DUR to failed_jobs ("killed after timeout").
    KillStuck {
        /// Default: queue.stuck_after (1h); at most 10 years.
        #[arg(long, value_parser = older_than_arg)]
        older_than: Option<Duration>,
    },
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Per-queue counts.
    Stats,
    /// Stop claiming from QUEUE on every node sharing the database.
    Pause {
        /// Queue name.
        queue: String,
    },
    /// Resume claiming from QUEUE.
    Resume {
        /// Queue name.
        queue: String,
    },
}

#[derive(Debug, Subcommand)]
enum FailedCommand {
    /// The newest failed jobs.
    List {
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=MAX_LIST_LIMIT as i64))]
        limit: u32,
    },
    /// Enqueue failed jobs again (as new jobs) and remove them from failed_jobs.
    Retry {
        /// The failed job's id (as `chom failed list` shows it).
        #[arg(required_unless_present = "all", conflicts_with = "all", value_parser = clap::value_parser!(i64).range(1..))]
        id: Option<i64>,
        /// Every failed job.
        #[arg(long)]
        all: bool,
    },
    /// Delete failed jobs older than DUR (default 24h).
    Prune {
        /// Age limit, e.g. 24h, 7days (at most 10 years).
        #[arg(long, value_parser = older_than_arg)]
        older_than: Option<Duration>,
    },
    /// Failures of the last 24 h by kind; kinds at or above queue.analyze_threshold are flagged.
    Analyze,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate; print the resolved config with secrets redacted; exit 78 if invalid.
    Check,
    /// Print the annotated default config (TOML).
    Default,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Crash-then-restart cycles of a trivial child under a one_for_one supervisor.
    Restart {
        /// Number of cycles.
        #[arg(long, default_value_t = 10_000)]
        n: usize,
    },
    /// Closed-loop HTTP load: GET URL from N clients until M requests; one JSON line
    /// (throughput, p50/p95/p99, status counts). Used by scripts/bench-api.
    Http {
        /// The URL to GET.
        url: String,
        /// A request header, `Name: value` (repeatable).
        #[arg(long = "header", value_parser = header_arg)]
        headers: Vec<(String, String)>,
        /// Clients at once.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
        concurrency: u16,
        /// Requests in all.
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
        requests: u32,
    },
    /// Run `true` N times on the config's server `--vps` from C callers: through the node's
    /// own exec path (started in this process), a new connection each, or a bare russh
    /// session; one JSON line. Used by scripts/bench-ssh.
    #[command(hide = true)]
    Ssh {
        /// How the commands reach the server.
        #[arg(long, value_enum)]
        mode: crate::bench_ssh::Mode,
        /// The `[[vps]]` entry to run on.
        #[arg(long, value_parser = vps_id_arg)]
        vps: String,
        /// Commands timed.
        #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        n: u32,
        /// Callers at once.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=256))]
        concurrency: u16,
    },
}

/// `Name: value` of `--header`.
fn header_arg(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| "a header is `Name: value`".to_owned())?;
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

// === argument checks (clap refuses a bad value with exit 2 before anything runs) ===

fn delay_arg(text: &str) -> Result<Duration, String> {
    limits::parse_duration("--delay", text, limits::MAX_DURATION).map_err(|e| e.to_string())
}

fn older_than_arg(text: &str) -> Result<Duration, String> {
    limits::parse_duration("--older-than", text, limits::MAX_DURATION).map_err(|e| e.to_string())
}

fn job_timeout_arg(text: &str) -> Result<Duration, String> {
    match limits::parse_duration("--timeout", text, limits::MAX_JOB_TIMEOUT) {
        Ok(d) if d.is_zero() => Err("`--timeout` must be greater than zero".to_owned()),
        other => other.map_err(|e| e.to_string()),
    }
}

fn unique_key_arg(text: &str) -> Result<String, String> {
    limits::check_text("--unique-key", text, limits::MAX_UNIQUE_KEY_CHARS)
        .map(|()| text.to_owned())
        .map_err(|e| e.to_string())
}

fn tenant_name_arg(text: &str) -> Result<String, String> {
    limits::check_text("NAME", text, limits::MAX_NAME_CHARS).map_err(|e| e.to_string())?;
    if text.trim().is_empty() {
        return Err("must not be blank".to_owned());
    }
    Ok(text.to_owned())
}

fn token_name_arg(text: &str) -> Result<String, String> {
    limits::check_text("NAME", text, limits::MAX_TOKEN_NAME_CHARS).map_err(|e| e.to_string())?;
    if text.trim().is_empty() {
        return Err("must not be blank".to_owned());
    }
    Ok(text.to_owned())
}

/// `text` itself when `valid`, else the message `why` gives (clap adds the value and the
/// argument's name).
fn accept(text: &str, valid: bool, why: impl FnOnce() -> String) -> Result<String, String> {
    if valid {
        Ok(text.to_owned())
    } else {
        Err(why())
    }
}

fn vps_id_arg(text: &str) -> Result<String, String> {
    accept(text, chom_core::config::is_name(text), || {
        format!(
            "not a vps id ({}, at most {} characters)",
            chom_core::config::NAME_RULE,
            limits::MAX_ID_CHARS
        )
    })
}

fn host_arg(text: &str) -> Result<String, String> {
    accept(text, chom_core::config::is_host(text), || {
        format!(
            "not a host name or IP address of at most {} characters (give the port with --port)",
            limits::MAX_HOST_CHARS
        )
    })
}

fn login_arg(text: &str) -> Result<String, String> {
    accept(text, chom_core::config::is_login_name(text), || {
        format!(
            "`{}` {}",
            text.escape_debug(),
            chom_core::config::LOGIN_RULE
        )
    })
}

fn fingerprint_arg(text: &str) -> Result<String, String> {
    accept(text, chom_core::config::is_fingerprint(text), || {
        "expected a SHA256 fingerprint as `ssh-keygen -lf` prints it (SHA256:...)".to_owned()
    })
}

/// Parse the command line and run the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    ExitCode::from(runtime.block_on(run(cli)))
}

async fn run(cli: Cli) -> u8 {
    match &cli.command {
        Command::Config(ConfigCommand::Default) => {
            print!("{DEFAULT_TOML}");
            0
        }
        Command::Config(ConfigCommand::Check) => config_check(&cli),
        Command::Bench(BenchCommand::Restart { n }) => bench_restart(*n).await,
        Command::Bench(BenchCommand::Http {
            url,
            headers,
            concurrency,
            requests,
        }) => {
            let run =
                crate::bench_http::run(url, headers, usize::from(*concurrency), *requests as usize);
            match run.await {
                Ok(result) => {
                    println!("{}", serde_json::to_string(&result).expect("serializes"));
                    0
                }
                Err(why) => {
                    eprintln!("chom: {why}");
                    1
                }
            }
        }
        Command::Bench(BenchCommand::Ssh {
            mode,
            vps,
            n,
            concurrency,
        }) => bench_ssh(&cli, *mode, vps, *n as usize, usize::from(*concurrency)).await,
        Command::Node => run_node(&cli).await,
        Command::Migrate => match load_config(&cli) {
            Ok(config) => migrate(&cli, &config).await,
            Err(errors) => report_config_errors(&cli, &errors),
        },
        Command::Status => admin(&cli, &node::Status {}, output::status).await,
        Command::Tree => admin(&cli, &node::Tree {}, output::tree).await,
        Command::Cluster => admin(&cli, &crate::api::cluster::Nodes {}, output::cluster).await,
        Command::Restart { path } => {
            admin(&cli, &node::Restart { path: path.clone() }, output::restart).await
        }
        Command::Health => admin(&cli, &node::Health {}, output::health).await,
        Command::Shutdown => admin(&cli, &node::Shutdown {}, output::shutdown).await,
        Command::Jobs(cmd) => jobs_command(&cli, cmd).await,
        Command::Queue(cmd) => queue_command(&cli, cmd).await,
        Command::Failed(cmd) => failed_command(&cli, cmd).await,
        Command::Vps(cmd) => vps_command(&cli, cmd).await,
        Command::Breaker(cmd) => breaker_command(&cli, cmd).await,
        Command::Alerts => admin(&cli, &alerts::List {}, output::alerts).await,
        Command::Tenants(cmd) => tenants_command(&cli, cmd).await,
        Command::Sites(cmd) => sites_command(&cli, cmd).await,
        Command::Ui(UiCommand::User(UiUserCommand::Add { name })) => {
            let request = crate::api::ui::UserAdd { name: name.clone() };
            admin(&cli, &request, output::ui_user_added).await
        }
        Command::Ui(UiCommand::User(UiUserCommand::Remove { name })) => {
            let request = crate::api::ui::UserRemove { name: name.clone() };
            admin(&cli, &request, output::ui_user_removed).await
        }
        Command::Metrics(MetricsCommand::Query { query, time }) => {
            let request = metrics::Query {
                query: query.clone(),
                time: time.clone(),
            };
            admin(&cli, &request, output::metrics_answer).await
        }
    }
}

/// `chom node`: validate the configuration and its files, then run until stopped.
async fn run_node(cli: &Cli) -> u8 {
    let (config, warnings) = match load_config(cli).and_then(|c| check_files(cli, c)) {
        Ok(loaded) => loaded,
        Err(errors) => return report_config_errors(cli, &errors),
    };
    let logs = crate::logging::init(&config.log, &config.observability);
    for warning in &warnings {
        tracing::warn!(key = %warning.key, "config: {}", warning.message);
    }
    let run = async { crate::node::run(config, crate::node::Signals::unix()?, logs).await };
    match run.await {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("chom: {error:#}");
            1
        }
    }
}

// === admin commands: each builds its method's typed request and names its printer ===

async fn jobs_command(cli: &Cli, cmd: &JobsCommand) -> u8 {
    match cmd {
        JobsCommand::Enqueue { batch: true, .. } => enqueue_batch(cli).await,
        JobsCommand::Enqueue {
            kind,
            payload,
            queue,
            delay,
            max_attempts,
            timeout,
            unique_key,
            batch: false,
        } => {
            let request = jobs::Enqueue {
                kind: kind.clone().unwrap_or_default(),
                payload: Some(Value::String(payload.clone())),
                queue: queue.clone(),
                delay: delay.map(HumanDuration),
                max_attempts: max_attempts.map(u64::from),
                timeout: timeout.map(HumanDuration),
                unique_key: unique_key.clone(),
            };
            admin(cli, &request, output::enqueued).await
        }
        JobsCommand::Show { id } => {
            let request = jobs::Show {
                id: Id::checked(*id),
            };
            admin(cli, &request, output::job).await
        }
        JobsCommand::List {
            queue,
            state,
            limit,
        } => {
            let request = jobs::List {
                queue: queue.clone(),
                state: state.clone(),
                limit: Some(u64::from(*limit)),
            };
            admin(cli, &request, output::jobs).await
        }
        JobsCommand::KillStuck { older_than } => {
            let request = jobs::KillStuck {
                older_than: older_than.map(HumanDuration),
            };
            admin(cli, &request, output::killed).await
        }
    }
}

async fn queue_command(cli: &Cli, cmd: &QueueCommand) -> u8 {
    match cmd {
        QueueCommand::Stats => admin(cli, &queue::Stats {}, output::queue_stats).await,
        QueueCommand::Pause { queue } => {
            let request = queue::Pause {
                queue: queue.clone(),
            };
            admin(cli, &request, output::paused).await
        }
        QueueCommand::Resume { queue } => {
            let request = queue::Resume {
                queue: queue.clone(),
            };
            admin(cli, &request, output::paused).await
        }
    }
}

async fn failed_command(cli: &Cli, cmd: &FailedCommand) -> u8 {
    match cmd {
        FailedCommand::List { limit } => {
            let request = failed::List {
                limit: Some(u64::from(*limit)),
            };
            admin(cli, &request, output::failed).await
        }
        FailedCommand::Retry { id, all } => {
            let request = failed::Retry {
                id: id.map(Id::checked),
                all: Some(*all),
            };
            admin(cli, &request, output::retried).await
        }
        FailedCommand::Prune { older_than } => {
            let request = failed::Prune {
                older_than: older_than.map(HumanDuration),
            };
            admin(cli, &request, output::pruned).await
        }
        FailedCommand::Analyze => admin(cli, &failed::Analyze {}, output::analyze).await,
    }
}

async fn vps_command(cli: &Cli, cmd: &VpsCommand) -> u8 {
    match cmd {
        VpsCommand::List => admin(cli, &vps::List {}, output::vps_list).await,
        VpsCommand::Add {
            id,
            host,
            port,
            user,
            host_key,
            tenant,
            max_sites,
        } => {
            let request = vps::Add {
                id: id.clone(),
                host: host.clone(),
                port: Some(u64::from(*port)),
                user: user.clone(),
                host_key: host_key.clone(),
                tenant_id: tenant.map(Id::checked),
                max_sites: max_sites.map(u64::from),
            };
            admin(cli, &request, output::vps_added).await
        }
        VpsCommand::Remove { id } => {
            admin(cli, &vps::Remove { id: id.clone() }, output::vps_removed).await
        }
    }
}

async fn breaker_command(cli: &Cli, cmd: &BreakerCommand) -> u8 {
    match cmd {
        BreakerCommand::List => admin(cli, &breaker::List {}, output::breakers).await,
        BreakerCommand::Reset { vps } => {
            admin(cli, &breaker::Reset { vps: vps.clone() }, output::breaker).await
        }
        BreakerCommand::Open { vps } => {
            admin(cli, &breaker::Open { vps: vps.clone() }, output::breaker).await
        }
        BreakerCommand::Close { vps } => {
            admin(cli, &breaker::Close { vps: vps.clone() }, output::breaker).await
        }
    }
}

async fn tenants_command(cli: &Cli, cmd: &TenantsCommand) -> u8 {
    match cmd {
        TenantsCommand::List => admin(cli, &tenants::List {}, output::tenants).await,
        TenantsCommand::Add { name, tier } => {
            let request = tenants::Add {
                name: name.clone(),
                tier: Some(tier.clone()),
            };
            admin(cli, &request, output::tenant_added).await
        }
        TenantsCommand::Suspend { tenant } => {
            let request = tenants::Suspend {
                tenant: Id::checked(*tenant),
            };
            admin(cli, &request, output::tenant_status).await
        }
        TenantsCommand::Resume { tenant } => {
            let request = tenants::Resume {
                tenant: Id::checked(*tenant),
            };
            admin(cli, &request, output::tenant_status).await
        }
        TenantsCommand::Token { tenant, name } => {
            let request = tenants::Token {
                tenant: Id::checked(*tenant),
                name: name.clone(),
            };
            admin(cli, &request, output::token_issued).await
        }
        TenantsCommand::Tokens { tenant } => {
            let request = tenants::Tokens {
                tenant: Id::checked(*tenant),
            };
            admin(cli, &request, output::tokens).await
        }
        TenantsCommand::Revoke { id } => {
            let request = tenants::Revoke {
                id: Id::checked(*id),
            };
            admin(cli, &request, output::token_revoked).await
        }
    }
}

async fn sites_command(cli: &Cli, cmd: &SitesCommand) -> u8 {
    match cmd {
        SitesCommand::List { tenant } => {
            let request = sites::List {
                tenant: tenant.map(Id::checked),
            };
            admin(cli, &request, output::sites).await
        }
        SitesCommand::Add {
            domain,
            tenant,
            vps,
            site_type,
            no_provision,
        } => {
            let request = sites::Add {
                tenant: Id::checked(*tenant),
                vps: vps.clone(),
                domain: domain.clone(),
                site_type: Some(site_type.clone()),
                provision: Some(!no_provision),
            };
            admin(cli, &request, output::site_added).await
        }
        SitesCommand::Provision { id } => {
            let request = sites::Provision {
                id: Id::checked(*id),
            };
            admin(cli, &request, output::provisioning).await
        }
    }
}

fn env_vars() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("CHOM_"))
        .collect()
}

fn load_config(cli: &Cli) -> Result<Config, ConfigErrors> {
    crate::config_file::load(cli.config.as_deref(), &env_vars())
}

fn report_config_errors(cli: &Cli, errors: &ConfigErrors) -> u8 {
    if cli.json {
        let list: Vec<Value> = errors
            .0
            .iter()
            .map(|e| json!({ "key": e.key, "env": e.env, "message": e.message }))
            .collect();
        println!("{}", json!({ "valid": false, "errors": list }));
    }
    eprintln!(
        "chom: invalid configuration ({} problem{}):",
        errors.0.len(),
        if errors.0.len() == 1 { "" } else { "s" }
    );
    for line in errors.to_string().lines() {
        eprintln!("  {line}");
    }
    EXIT_CONFIG
}

/// The file checks of `chom config check` and `chom node` (config file mode, SSH files):
/// errors make the configuration invalid; warnings come back for the caller to show.
fn check_files(cli: &Cli, config: Config) -> Result<(Config, Vec<ConfigError>), ConfigErrors> {
    let report = crate::config_file::check_files(&config, cli.config.as_deref());
    if report.errors.is_empty() {
        Ok((config, report.warnings))
    } else {
        Err(ConfigErrors(report.errors))
    }
}

fn config_check(cli: &Cli) -> u8 {
    match load_config(cli).and_then(|c| check_files(cli, c)) {
        Ok((config, warnings)) => {
            for warning in &warnings {
                eprintln!("chom: warning: {warning}");
            }
            let redacted = config.to_redacted_toml();
            if cli.json {
                let value: toml::Value =
                    toml::from_str(&redacted).expect("redacted config is TOML");
                let warnings: Vec<Value> = warnings
                    .iter()
                    .map(|w| json!({ "key": w.key, "message": w.message }))
                    .collect();
                println!(
                    "{}",
                    json!({ "valid": true, "config": value, "warnings": warnings })
                );
            } else {
                print!("{redacted}");
                eprintln!("chom: configuration is valid");
            }
            0
        }
        Err(errors) => report_config_errors(cli, &errors),
    }
}

async fn migrate(cli: &Cli, config: &Config) -> u8 {
    crate::logging::init_client();
    let outcome = async {
        let store = chom_store::open(&config.database)?;
        store.migrate().await?;
        store.close().await;
        Ok::<_, chom_store::StoreError>(store.backend())
    }
    .await;
    match outcome {
        Ok(backend) => {
            if cli.json {
                println!(
                    "{}",
                    json!({ "migrated": true, "backend": backend.as_str() })
                );
            } else {
                println!("migrations applied ({})", backend.as_str());
            }
            0
        }
        Err(error) => {
            eprintln!("chom: {error}");
            1
        }
    }
}

/// Where the admin socket is: `--socket`, then `CHOM_ADMIN_SOCKET`/the config's `admin.socket`.
fn socket_path(cli: &Cli) -> Result<PathBuf, ConfigErrors> {
    match &cli.socket {
        Some(path) => Ok(path.clone()),
        None => Ok(load_config(cli)?.admin.socket),
    }
}

/// A human printer of one method's reply: the text and the exit status.
type Render<R> = fn(&R) -> (String, u8);

/// Send one admin request and show its answer: `--json` prints the document as it came;
/// otherwise the reply, decoded with control characters escaped (stored text may hold them and
/// must not drive the terminal), goes to its printer. The printer's exit status applies to both.
/// `chom jobs enqueue --batch` (see `batch_enqueue`): ids as each chunk is stored, or with
/// `--json` one document `{"ids": [...]}` at the end.
async fn enqueue_batch(cli: &Cli) -> u8 {
    use crate::batch_enqueue::{BatchError, run};
    use std::io::Write;
    crate::logging::init_client();
    let socket = match socket_path(cli) {
        Ok(s) => s,
        Err(errors) => return report_config_errors(cli, &errors),
    };
    let mut all = Vec::new();
    let stdout = std::io::stdout();
    let outcome = run(&socket, tokio::io::stdin(), |ids| {
        if cli.json {
            all.extend_from_slice(ids);
        } else {
            let mut out = stdout.lock();
            for id in ids {
                let _ = writeln!(out, "{id}");
            }
        }
    })
    .await;
    match outcome {
        Ok(_) => {
            if cli.json {
                println!("{}", serde_json::json!({ "ids": all }));
            }
            0
        }
        Err(failure) => {
            let (message, code) = match failure {
                BatchError::Input(why) => (format!("{why}; nothing from this line on was sent"), 1),
                BatchError::Node { lines, error } => (
                    format!(
                        "lines {}-{} not enqueued (the chunks before them were): {error}",
                        lines.0, lines.1
                    ),
                    error.exit_code(),
                ),
            };
            eprintln!("chom: {message}");
            if cli.json {
                // The ids of the chunks stored before the failure.
                println!("{}", serde_json::json!({ "error": message, "ids": all }));
            }
            code
        }
    }
}

async fn admin<M: Method>(cli: &Cli, request: &M, render: Render<M::Reply>) -> u8 {
    crate::logging::init_client();
    let socket = match socket_path(cli) {
        Ok(s) => s,
        Err(errors) => return report_config_errors(cli, &errors),
    };
    match client::request(&socket, request).await {
        Ok(result) => show(cli, &result, render),
        Err(error) => client_failure(cli, &socket, &error),
    }
}

fn show<R: DeserializeOwned>(cli: &Cli, result: &Value, render: Render<R>) -> u8 {
    let reply = serde_json::from_value::<R>(output::escape_strings(result));
    if cli.json {
        println!("{result}");
    }
    match reply {
        Ok(reply) => {
            let (text, code) = render(&reply);
            if !cli.json {
                print!("{text}");
            }
            code
        }
        Err(error) => {
            eprintln!("chom: unreadable answer from the node: {error}");
            1
        }
    }
}

/// What `--json` prints when a command failed.
#[derive(Serialize)]
struct Failure {
    error: String,
    socket: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<i64>,
}

fn client_failure(cli: &Cli, socket: &Path, error: &ClientError) -> u8 {
    if cli.json {
        let doc = Failure {
            error: error.to_string(),
            socket: socket.display().to_string(),
            code: match error {
                ClientError::Rpc(e) => Some(e.code),
                _ => None,
            },
        };
        println!(
            "{}",
            serde_json::to_value(&doc).expect("a failure serializes")
        );
    }
    eprintln!("chom: {}", limits::escape_control(&error.to_string()));
    error.exit_code()
}

async fn bench_ssh(
    cli: &Cli,
    mode: crate::bench_ssh::Mode,
    vps: &str,
    n: usize,
    concurrency: usize,
) -> u8 {
    let config = match load_config(cli).and_then(|c| check_files(cli, c)) {
        Ok((config, _)) => config,
        Err(errors) => return report_config_errors(cli, &errors),
    };
    let _ = crate::logging::init(&config.log, &config.observability);
    match crate::bench_ssh::run(config, mode, vps, n, concurrency).await {
        Ok(result) => {
            println!("{}", serde_json::to_string(&result).expect("serializes"));
            u8::from(result.failures > 0)
        }
        Err(why) => {
            eprintln!("chom: {why}");
            1
        }
    }
}

async fn bench_restart(n: usize) -> u8 {
    if n == 0 {
        eprintln!("chom: --n must be at least 1");
        return 2;
    }
    let result = chom_supervisors::bench::restart(n).await;
    eprintln!(
        "restart: {} cycles, median {:.1} µs, p99 {:.1} µs, {} bytes per idle actor",
        result.n, result.median_us, result.p99_us, result.idle_actor_bytes
    );
    println!(
        "{}",
        serde_json::to_string(&result).expect("bench result serializes")
    );
    0
}
