//! `rack-manager logs`: an instance's console, or every instance's of a deployment, with the
//! address a guest announces annotated with the one that reaches it from the host.

use std::{io::Write, thread, time::Duration};

use anyhow::{Context, bail};
use rack_api::{Instance, LogChunk, PortForward};

use super::{
    output::{self, Format},
    targets,
};
use crate::client::Client;

pub fn run(client: &Client, format: Format, name: &str, follow: bool) -> anyhow::Result<()> {
    let ids = targets::resolve(client, &[name.to_owned()])?;
    if follow && ids.len() > 1 {
        bail!("{name} has {} instances and --follow follows one: name one of {}", ids.len(), ids.join(", "));
    }
    if format == Format::Json {
        // One chunk per instance, the API's own type.
        let chunks: Vec<LogChunk> =
            ids.iter().map(|id| client.get(&format!("/instances/{id}/logs?offset=0"))).collect::<Result<_, _>>()?;
        return output::print_json(&chunks);
    }
    for id in &ids {
        if ids.len() > 1 {
            println!("==> {id} <==");
        }
        print_log(client, id, follow)?;
    }
    Ok(())
}

fn print_log(client: &Client, instance: &str, follow: bool) -> anyhow::Result<()> {
    let ports = client.get::<Instance>(&format!("/instances/{instance}")).map(|i| i.ports).unwrap_or_default();
    let mut offset = 0;
    let mut stdout = std::io::stdout();
    loop {
        let chunk: LogChunk = client.get(&format!("/instances/{instance}/logs?offset={offset}"))?;
        if chunk.offset > offset {
            eprintln!("[{} bytes of older output are outside the kept history]", chunk.offset - offset);
        }
        stdout.write_all(annotate(&chunk.text, &ports).as_bytes()).context("writing to stdout")?;
        stdout.flush().context("writing to stdout")?;
        offset = chunk.next_offset;
        if !follow || (!chunk.running && chunk.text.is_empty()) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// `text` with each `listening on http://ADDRESS:PORT/` line followed by where the host reaches
/// it, when that differs: the guest knows only its own address (QEMU's 10.0.2.15), not the
/// forward to it.
pub fn annotate(text: &str, ports: &[PortForward]) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let Some((_, url)) = line.split_once("listening on http://") else {
            out.push_str(line);
            continue;
        };
        let guest_port = url.split(['/', '\n']).next().and_then(|a| a.rsplit(':').next()).and_then(|p| p.parse().ok());
        let forward = ports.iter().find(|p| Some(p.guest_port) == guest_port && p.address.is_none());
        match forward {
            Some(forward) => {
                let (body, newline) = line.strip_suffix('\n').map_or((line, ""), |b| (b, "\n"));
                out.push_str(&format!("{body}   [from this host: http://127.0.0.1:{}/]{newline}", forward.host_port));
            }
            None => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(host_port: u16) -> PortForward {
        PortForward { host_port, guest_port: 8080, protocol: "tcp".into(), address: None }
    }

    #[test]
    fn the_guests_address_is_annotated_with_the_forward() {
        let text = "boot\nhttpd: listening on http://10.0.2.15:8080/\nready\n";
        let annotated = annotate(text, &[forward(40573)]);
        assert_eq!(
            annotated,
            "boot\nhttpd: listening on http://10.0.2.15:8080/   [from this host: http://127.0.0.1:40573/]\nready\n"
        );
        assert_eq!(annotate(text, &[]), text, "nothing forwarded: unchanged");
        let tender = PortForward { address: Some([10, 64, 0, 2].into()), ..forward(8080) };
        assert_eq!(annotate(text, &[tender]), text, "a tender guest's own address is reachable as it is");
    }
}
