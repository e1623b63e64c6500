//! The power lines of `rack-manager stats`, under the instances' table ([`rack_api::power`]).

use rack_api::power::RackPower;

use super::output;

pub fn print(power: &RackPower) {
    println!();
    let budget = power.budget_w.map_or_else(|| "no budget".to_owned(), |b| format!("budget {b:.0} W"));
    println!(
        "power: {:.1} W estimated now, {:.1} W if every reserved vCPU were busy ({budget})",
        power.watts, power.worst_case_w
    );
    let hosts: Vec<Vec<String>> = power
        .hosts
        .iter()
        .map(|h| {
            vec![
                h.host.clone(),
                format!("{:.1} W", h.watts),
                format!("{:.2}", h.busy_cores),
                format!("{:.0} W + {:.0} W/core", h.model.idle_w, h.model.core_w),
                format!("{:.1} W", h.worst_case_w),
                h.model.budget_w.map_or("-".into(), |b| format!("{b:.0} W")),
            ]
        })
        .collect();
    // Thousands of simulated hosts would drown the table: the busiest twenty are enough.
    let mut shown = hosts;
    shown.sort_by(|a, b| b[1].len().cmp(&a[1].len()).then(b[1].cmp(&a[1])));
    let hidden = shown.len().saturating_sub(20);
    shown.truncate(20);
    output::table(&["HOST", "POWER", "BUSY CORES", "MODEL", "WORST CASE", "BUDGET"], &shown);
    if hidden > 0 {
        println!("… and {hidden} more host(s) (`stats -o json` lists all)");
    }
    println!();
    let deployments: Vec<Vec<String>> = power
        .deployments
        .iter()
        .map(|d| {
            vec![
                d.deployment.clone(),
                d.image_name.clone(),
                format!("{:.2} s", d.cpu_seconds),
                format!("{:.4} Wh", d.wh),
                format!("{:.2} W", d.watts),
            ]
        })
        .collect();
    output::table(&["DEPLOYMENT", "IMAGE", "CPU TIME", "ENERGY", "POWER"], &deployments);
}
