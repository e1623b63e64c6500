//! What a peer may ask of this rack, checked before anything a peer sent is used.
//!
//! A peer's certificate proves who it is, not what it may do. A peer's failover plan (sent in its
//! heartbeats) is taken over only if:
//!
//! - its image is one this rack holds, signed by a key the operator trusts **for that peer**
//!   (`peer add NAME URL --fingerprint FP --image-key KEY`; none by default, so nothing is taken
//!   over from a peer until the operator says which signers' images it may have run here);
//! - its size is within this rack's limits (`serve --takeover-max-*`): replicas per plan,
//!   instances per peer, memory and vCPUs per instance;
//! - its arguments are the image manifest's, unless `serve --takeover-custom-args` allows others.
//!
//! Names from a peer (rack, deployment, image) go into file paths, logs and the store: each is
//! checked by [`check_name`] first, like a local name.

use rack_api::{
    Image,
    peers::{PeerEntry, TakeoverLimits},
};
use serde::{Deserialize, Serialize};

use super::PlanSpec;

/// The most plans one heartbeat may carry; more is refused whole.
pub const MAX_PLANS: usize = 256;
/// The most boot arguments a plan may carry, and their total bytes.
const MAX_ARGS: usize = 64;
const MAX_ARGS_BYTES: usize = 4096;

/// `serve` limits on what a down peer's plan may start here. The defaults let a peer's small
/// appliances fail over (Mast's own ask 16-64 MiB and one vCPU) while capping what an automatic
/// decision, made with no operator present, can take from this rack's own deployments: at most
/// 16 instances per peer (4 per plan), 256 MiB and 2 vCPUs each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
pub struct TakeoverPolicy {
    /// The most replicas of one peer's deployment this rack takes over; a plan asking more is refused.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub takeover_max_replicas: u32,
    /// The most instances this rack runs for one peer, over all the deployments it took over from it.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub takeover_max_instances: u32,
    /// The most guest memory per instance of a taken-over deployment, in MiB.
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    pub takeover_max_memory_mib: u32,
    /// The most vCPUs per instance of a taken-over deployment.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub takeover_max_vcpus: u32,
    /// Take over deployments whose boot arguments differ from their image manifest's. Without it
    /// only the manifest's arguments are accepted: a peer chooses which signed appliance runs
    /// here, not how it is configured.
    #[arg(long)]
    pub takeover_custom_args: bool,
}

impl TakeoverPolicy {
    /// The limits as the rack API shows them (`failover plan`).
    pub fn limits(&self) -> TakeoverLimits {
        TakeoverLimits {
            takeover_max_replicas: self.takeover_max_replicas,
            takeover_max_instances: self.takeover_max_instances,
            takeover_max_memory_mib: self.takeover_max_memory_mib,
            takeover_max_vcpus: self.takeover_max_vcpus,
            takeover_custom_args: self.takeover_custom_args,
        }
    }
}

/// A name a peer sent (rack, deployment, image): 1-64 ASCII letters, digits, '-', '_' and '.',
/// starting with a letter or digit, so it is one path component and never `.` or `..`.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        let shown: String = name.chars().take(80).collect();
        Err(format!(
            "{shown:?} is not a valid {what} name: use 1-64 letters, digits, '-', '_' and '.', starting with a letter or digit"
        ))
    }
}

/// An image id: 64 lowercase hex digits.
fn check_image_id(id: &str) -> Result<(), String> {
    if id.len() == 64 && id.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
        Ok(())
    } else {
        Err(format!("{:?} is not an image id (64 hex digits)", id.chars().take(80).collect::<String>()))
    }
}

/// Checks the shape of a plan a peer sent, before it is kept: names, ids and bounded sizes.
/// Whether this rack would run it is [`judge`]'s question.
pub fn check_plan(plan: &PlanSpec) -> Result<(), String> {
    check_name("deployment", &plan.deployment)?;
    check_image_id(&plan.image_id)?;
    check_name("image", &plan.image_name)?;
    if plan.failover_to.len() > 64 {
        return Err(format!("deployment {}: more than 64 racks to fail over to", plan.deployment));
    }
    for rack in &plan.failover_to {
        check_name("rack", rack)?;
    }
    let bytes: usize = plan.args.iter().map(String::len).sum();
    if plan.args.len() > MAX_ARGS || bytes > MAX_ARGS_BYTES {
        return Err(format!(
            "deployment {}: more than {MAX_ARGS} arguments or {MAX_ARGS_BYTES} bytes of them",
            plan.deployment
        ));
    }
    Ok(())
}

/// Whether this rack would take `plan` over from `peer` now, or why not. `image` is this rack's
/// record of the plan's image, if it has one; `running_for_peer` counts the instances this rack
/// already runs for that peer (other deployments taken over from it).
pub fn judge(
    policy: &TakeoverPolicy,
    peer: Option<&PeerEntry>,
    plan: &PlanSpec,
    image: Option<&Image>,
    running_for_peer: u32,
) -> Result<(), String> {
    let Some(peer) = peer else {
        return Err("the rack is no longer a configured peer".into());
    };
    let Some(image) = image else {
        return Err(format!(
            "image {} ({}) has not been replicated here",
            plan.image_name,
            rack_api::short_id(&plan.image_id)
        ));
    };
    if peer.image_keys.is_empty() {
        return Err(format!(
            "no image key is trusted for peer {0}, so nothing of it is taken over: if {0} may run images signed by \
             {1} here, run `rack-manager peer add {0} {2} --fingerprint {3} --image-key {1}`",
            peer.name, image.signer, peer.url, peer.fingerprint
        ));
    }
    if !peer.image_keys.contains(&image.signer) {
        return Err(format!(
            "image {} is signed by {}, which is not trusted for peer {} (its image keys: {}); to allow it, add \
             `--image-key {}` to its `rack-manager peer add`",
            image.name,
            image.signer,
            peer.name,
            peer.image_keys.join(", "),
            image.signer
        ));
    }
    if plan.replicas == 0 || plan.replicas > policy.takeover_max_replicas {
        return Err(format!(
            "{} replicas asked, this rack takes over 1 to {} (serve --takeover-max-replicas)",
            plan.replicas, policy.takeover_max_replicas
        ));
    }
    let total = running_for_peer.saturating_add(plan.replicas);
    if total > policy.takeover_max_instances {
        return Err(format!(
            "{} instances already run here for peer {}, {} more would pass the limit of {} (serve --takeover-max-instances)",
            running_for_peer, peer.name, plan.replicas, policy.takeover_max_instances
        ));
    }
    if plan.memory_mib > policy.takeover_max_memory_mib {
        return Err(format!(
            "{} MiB per instance asked, this rack allows {} (serve --takeover-max-memory-mib)",
            plan.memory_mib, policy.takeover_max_memory_mib
        ));
    }
    if plan.vcpus > policy.takeover_max_vcpus {
        return Err(format!(
            "{} vCPUs per instance asked, this rack allows {} (serve --takeover-max-vcpus)",
            plan.vcpus, policy.takeover_max_vcpus
        ));
    }
    if !policy.takeover_custom_args && plan.args != image.args {
        return Err(format!(
            "arguments {:?} differ from image {}'s manifest {:?}; this rack runs a peer's images with their own \
             arguments only (serve --takeover-custom-args allows others)",
            plan.args, image.name, image.args
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "11";

    fn policy() -> TakeoverPolicy {
        TakeoverPolicy {
            takeover_max_replicas: 4,
            takeover_max_instances: 6,
            takeover_max_memory_mib: 256,
            takeover_max_vcpus: 2,
            takeover_custom_args: false,
        }
    }

    fn peer(keys: &[&str]) -> PeerEntry {
        PeerEntry {
            name: "a".into(),
            url: "https://127.0.0.1:1".into(),
            fingerprint: "00".repeat(32),
            image_keys: keys.iter().map(|k| k.repeat(32)).collect(),
        }
    }

    fn image() -> Image {
        Image {
            id: "ab".repeat(32),
            name: "httpd".into(),
            version: "0.1.0".into(),
            description: String::new(),
            arch: "x86_64".into(),
            signer: KEY.repeat(32),
            size: 1,
            memory_mib: 16,
            vcpus: 1,
            args: vec!["serve".into()],
            listen: Vec::new(),
            restart: rack_api::RestartPolicy { when: rack_api::RestartWhen::Always, max_restarts: 0, backoff_ms: 0 },
            pushed_ms: 0,
            platform: "qemu".into(),
        }
    }

    fn plan() -> PlanSpec {
        PlanSpec {
            deployment: "d1".into(),
            image_id: "ab".repeat(32),
            image_name: "httpd".into(),
            replicas: 2,
            memory_mib: 16,
            vcpus: 1,
            args: vec!["serve".into()],
            restart: rack_api::RestartWhen::Always,
            failover_to: vec!["b".into()],
            has_volume: false,
        }
    }

    fn refusal(peer: &PeerEntry, plan: &PlanSpec, running: u32) -> String {
        judge(&policy(), Some(peer), plan, Some(&image()), running).expect_err("refused")
    }

    #[test]
    fn names_with_path_components_or_odd_characters_are_refused() {
        for good in ["d1", "a", "rack-b.example", "x_1"] {
            assert_eq!(check_name("deployment", good), Ok(()), "{good}");
        }
        for bad in ["", ".", "..", "../../x", "a/b", ".hidden", "-flag", "a b", "é", &"x".repeat(65), "a\nb"] {
            assert!(check_name("deployment", bad).is_err(), "{bad:?} accepted");
        }
        let mut bad = plan();
        bad.deployment = "../../x".into();
        assert!(check_plan(&bad).expect_err("refused").contains("not a valid deployment name"));
        let mut bad = plan();
        bad.image_id = "../x".into();
        assert!(check_plan(&bad).is_err());
        let mut bad = plan();
        bad.failover_to = vec!["b/../c".into()];
        assert!(check_plan(&bad).is_err());
        let mut bad = plan();
        bad.args = vec!["x".repeat(5000)];
        assert!(check_plan(&bad).is_err());
        assert_eq!(check_plan(&plan()), Ok(()));
    }

    #[test]
    fn a_plan_runs_only_with_an_image_key_trusted_for_its_peer_and_within_limits() {
        assert_eq!(judge(&policy(), Some(&peer(&[KEY])), &plan(), Some(&image()), 0), Ok(()));
        assert!(refusal(&peer(&[]), &plan(), 0).contains("no image key is trusted for peer a"));
        assert!(refusal(&peer(&["22"]), &plan(), 0).contains("not trusted for peer a"));
        let missing = judge(&policy(), Some(&peer(&[KEY])), &plan(), None, 0).expect_err("no image");
        assert!(missing.contains("has not been replicated here"), "{missing}");
        assert!(judge(&policy(), None, &plan(), Some(&image()), 0).is_err(), "a removed peer");

        let trusted = peer(&[KEY]);
        let with = |change: fn(&mut PlanSpec)| {
            let mut p = plan();
            change(&mut p);
            p
        };
        assert!(refusal(&trusted, &with(|p| p.replicas = 25), 0).contains("--takeover-max-replicas"));
        assert!(refusal(&trusted, &with(|p| p.replicas = 0), 0).contains("replicas"));
        assert!(refusal(&trusted, &plan(), 5).contains("--takeover-max-instances"));
        assert!(refusal(&trusted, &with(|p| p.memory_mib = 4096), 0).contains("--takeover-max-memory-mib"));
        assert!(refusal(&trusted, &with(|p| p.vcpus = 8), 0).contains("--takeover-max-vcpus"));
        let custom = with(|p| p.args = vec!["--evil".into()]);
        assert!(refusal(&trusted, &custom, 0).contains("--takeover-custom-args"));
        let open = TakeoverPolicy { takeover_custom_args: true, ..policy() };
        assert_eq!(judge(&open, Some(&trusted), &custom, Some(&image()), 0), Ok(()));
    }
}
