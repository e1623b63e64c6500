//! What `stop`, `start`, `restart`, `rm`, `logs` and `scale` act on: instances named by id, or
//! every instance of a deployment named by its id (`d3`) or its image's name (`httpd`).

use rack_api::{DeploymentStatus, Instance, ScaleRequest};

use super::output::{self, Format};
use crate::client::{Client, ClientError};

/// The instance ids `names` stand for, in order, each once.
pub fn resolve(client: &Client, names: &[String]) -> anyhow::Result<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    for name in names {
        let found: Vec<String> = match client.get::<Instance>(&format!("/instances/{name}")) {
            Ok(instance) => vec![instance.id],
            Err(ClientError::Api { status: 404, .. }) => {
                let status: DeploymentStatus = client.get(&format!("/deployments/{name}"))?;
                status.instances.into_iter().map(|i| i.id).collect()
            }
            Err(e) => return Err(e.into()),
        };
        for id in found {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    Ok(ids)
}

/// `stop|start|restart|rm NAME...`: the instances done, one id a line (or JSON).
pub fn lifecycle(client: &Client, format: Format, names: &[String], action: &str) -> anyhow::Result<()> {
    let mut done = Vec::new();
    for id in resolve(client, names)? {
        let instance: Instance = if action == "rm" {
            client.delete(&format!("/instances/{id}"))?
        } else {
            client.post(&format!("/instances/{id}/{action}"), &())?
        };
        done.push(instance);
    }
    match format {
        Format::Json => output::print_json(&done),
        Format::Table => {
            for instance in &done {
                println!("{}", instance.id);
            }
            Ok(())
        }
    }
}

/// `scale NAME --replicas N`: the deployment's instances afterwards (JSON: the deployment too).
pub fn scale(client: &Client, format: Format, name: &str, replicas: u32) -> anyhow::Result<()> {
    let status: DeploymentStatus = client.post(&format!("/deployments/{name}/scale"), &ScaleRequest { replicas })?;
    if format == Format::Json {
        return output::print_json(&status);
    }
    eprintln!(
        "deployment {} ({}): {} replica(s); new ones start in the background (`rack-manager ps`)",
        status.deployment.id,
        status.deployment.image_name,
        status.instances.len()
    );
    output::instances(format, &status.instances, false)
}
