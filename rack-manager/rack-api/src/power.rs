//! Power you can read: each host's power model, the rack's estimated draw now, its budget, and
//! the energy each deployment's CPU time cost (`GET /v1/power`, also inside `GET /v1/stats`;
//! `POST /v1/hosts/{name}/power` sets a host's model, admin only).
//!
//! The model is linear, the usual first-order model of a server's draw: `idle_w` whenever the
//! host is up, plus `core_w` for each core kept busy. Busy cores are the instances' CPU use
//! (each instance's average over its current run, in cores); a deployment's energy is its
//! instances' CPU time × their hosts' `core_w` (the idle draw belongs to the host, not to any
//! deployment). Placement checks the worst case: every reserved vCPU busy.

use serde::{Deserialize, Serialize};

/// Watts a host draws idle, and per busy core, unless told otherwise: a small edge server
/// (a fanless x86 box or an Arm board with an SSD idles at 10-30 W; a busy core adds 5-15 W).
pub const DEFAULT_IDLE_W: f64 = 20.0;
pub const DEFAULT_CORE_W: f64 = 8.0;

/// One host's power model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PowerModel {
    /// Draw with nothing running, in watts.
    pub idle_w: f64,
    /// Added draw per fully busy core, in watts.
    pub core_w: f64,
    /// The most this host may draw in the worst case (every reserved vCPU busy); placement
    /// refuses instances beyond it. `None`: no budget.
    #[serde(default)]
    pub budget_w: Option<f64>,
}

impl Default for PowerModel {
    fn default() -> PowerModel {
        PowerModel { idle_w: DEFAULT_IDLE_W, core_w: DEFAULT_CORE_W, budget_w: None }
    }
}

impl std::str::FromStr for PowerModel {
    type Err = String;

    /// `idle=20,core=8[,budget=120]` (watts); omitted keys keep their defaults.
    fn from_str(text: &str) -> Result<PowerModel, String> {
        let mut model = PowerModel::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) =
                part.split_once('=').ok_or_else(|| format!("{part:?} is not KEY=WATTS (idle=20,core=8,budget=120)"))?;
            let watts: f64 = value
                .trim_end_matches('W')
                .trim_end_matches('w')
                .parse()
                .ok()
                .filter(|w: &f64| w.is_finite() && *w >= 0.0 && *w < 1e6)
                .ok_or_else(|| format!("{value:?} is not a number of watts (0 to 1000000)"))?;
            match key.trim() {
                "idle" => model.idle_w = watts,
                "core" => model.core_w = watts,
                "budget" => model.budget_w = Some(watts),
                other => return Err(format!("unknown key {other:?}: use idle=, core= and budget=")),
            }
        }
        Ok(model)
    }
}

/// One host's draw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostPower {
    pub host: String,
    pub model: PowerModel,
    /// Cores its instances keep busy (each instance's average over its current run).
    pub busy_cores: f64,
    /// Estimated draw now: `idle_w + core_w × busy_cores`.
    pub watts: f64,
    /// The draw if every vCPU reserved on it were busy.
    pub worst_case_w: f64,
}

/// The energy a deployment's CPU time cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentEnergy {
    pub deployment: String,
    pub image_name: String,
    /// CPU time of its instances' current runs, in seconds.
    pub cpu_seconds: f64,
    /// That CPU time × the hosts' `core_w`, in watt-hours.
    pub wh: f64,
    /// Its share of the draw now, in watts.
    pub watts: f64,
}

/// `GET /v1/power`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RackPower {
    pub hosts: Vec<HostPower>,
    pub deployments: Vec<DeploymentEnergy>,
    /// Estimated draw of the whole rack now, in watts.
    pub watts: f64,
    /// The draw if every reserved vCPU were busy.
    pub worst_case_w: f64,
    /// `serve --power-budget-w`: the rack's worst case may not exceed it.
    pub budget_w: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_parse_with_defaults_and_clear_errors() {
        let model: PowerModel = "idle=35, core=12W".parse().expect("valid");
        assert_eq!(model, PowerModel { idle_w: 35.0, core_w: 12.0, budget_w: None });
        assert_eq!("budget=90".parse::<PowerModel>().expect("valid").budget_w, Some(90.0));
        assert_eq!("".parse::<PowerModel>().expect("defaults"), PowerModel::default());
        assert!("idle=-1".parse::<PowerModel>().is_err());
        assert!("idle=NaN".parse::<PowerModel>().is_err());
        assert!("watts=3".parse::<PowerModel>().expect_err("unknown").contains("idle="));
    }
}
