//! What the daemon (`serve`, `agent`) says about what it does: structured `tracing` events on
//! stderr, as text for people or one JSON object a line (`--log-format json`) for collectors.
//!
//! Events carry fields (`instance`, `deployment`, `host`, `pid`, `status`, ...) and a short
//! message: deployed, placed, launched, launch failed, exited, restart scheduled, gave up,
//! taking over, shutting down.

use std::io::IsTerminal;

use clap::Args;
use tracing_subscriber::filter::LevelFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event for people (colours on a terminal).
    Human,
    /// One JSON object per line: `timestamp`, `level`, `message` and the event's fields.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Logging options of the daemons.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// How the daemon's events are written to stderr.
    #[arg(long, value_enum, default_value = "human")]
    pub log_format: LogFormat,
    /// The least severe events written.
    #[arg(long, value_enum, default_value = "info")]
    pub log_level: LogLevel,
}

/// Installs the daemon's event writer; a second call changes nothing.
pub fn init(args: &LogArgs) {
    let level = match args.log_level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    };
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(level).with_target(false);
    let _already = match args.log_format {
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Logs the daemon's shutdown on SIGTERM or SIGINT, then exits 0. Instances are processes of
/// their own: they keep running, and the next daemon on the data directory adopts them.
pub fn on_shutdown_signal() {
    std::thread::spawn(|| {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        runtime.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut interrupt)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
            else {
                return;
            };
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            tracing::info!(
                signal = name,
                "shutting down: instances keep running; the next serve on this data directory adopts them"
            );
            std::process::exit(0);
        });
    });
}
