//! `deploy --on-demand`: its flags, and how `ps` shows a gate.

use rack_api::{GateStatus, OnDemand};

/// The idle timeout when `--idle-timeout` is not given.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 30_000;

#[derive(Debug, clap::Args)]
pub struct OnDemandArgs {
    /// Run only when needed: the host holds the service address open and starts an instance on
    /// the first connection (or datagram), then stops it when idle (docs/on-demand.md).
    #[arg(long)]
    on_demand: bool,
    /// With --on-demand: stop an instance after this long without a connection open or a
    /// datagram (e.g. 500ms, 30s, 5m) [default: 30s].
    #[arg(long, value_name = "DURATION", requires = "on_demand", value_parser = parse_duration_ms)]
    idle_timeout: Option<u64>,
    /// With --on-demand: run up to N instances per host under load, one more when every running
    /// one is busy [default: 1].
    #[arg(long, value_name = "N", requires = "on_demand")]
    max_instances: Option<u32>,
}

impl OnDemandArgs {
    pub fn settings(&self) -> Option<OnDemand> {
        self.on_demand.then(|| OnDemand {
            idle_timeout_ms: self.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT_MS),
            max_instances: self.max_instances.unwrap_or(1),
        })
    }
}

/// `500ms`, `30s`, `5m`, `1h` (a bare number is seconds) → milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration: give e.g. 500ms, 30s or 5m"))?;
    let scale = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m or h")),
    };
    value.checked_mul(scale).ok_or_else(|| format!("{text:?} is too long"))
}

/// The `DEMAND` cell of `ps`: wakes, the last wake's latency, time since the last request.
pub fn demand_cell(gate: Option<&GateStatus>) -> String {
    let Some(gate) = gate else { return "-".into() };
    let last = gate.last_wake_us.map_or("-".into(), |us| format!("{:.1}ms", us as f64 / 1000.0));
    let idle = gate.idle_ms.map_or("never".into(), |ms| format!("{:.0}s", ms as f64 / 1000.0));
    format!("{} wakes, last {last}, idle {idle}", gate.wakes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_refuse_the_rest() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("30"), Ok(30_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert!(parse_duration_ms("5 days").is_err());
        assert!(parse_duration_ms("ms").is_err());
        assert!(parse_duration_ms("99999999999999999999h").is_err());
    }

    #[test]
    fn a_gate_is_shown_in_one_cell() {
        let gate = GateStatus {
            state: rack_api::GateState::Asleep,
            awake_instances: 0,
            wakes: 3,
            last_wake_us: Some(8_200),
            idle_ms: Some(12_000),
            cpu_ms: 40,
            awake_ms: 900,
        };
        assert_eq!(demand_cell(Some(&gate)), "3 wakes, last 8.2ms, idle 12s");
        assert_eq!(demand_cell(None), "-");
    }
}
